import { defineConfig } from "vitest/config";

// Unit tests live next to the code (services/*/src, sdk-ts/src); whole-system
// tests in test/ start the services as processes against the real NATS and
// Postgres. `npm test` builds first: the system tests run the built CLI.
export default defineConfig({
  test: {
    include: ["proto/protocol/**/*.test.ts", "services/*/src/**/*.test.ts", "sdk-ts/src/**/*.test.ts", "test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/dist/**"],
    // A failed test writes the logs of the services it ran to test/artifacts/failures.log.
    setupFiles: ["test/support/failure-logs.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
