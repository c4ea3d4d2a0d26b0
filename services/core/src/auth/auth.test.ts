import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testBackends, type TestDatabase } from "../testing/test-database.js";
import { environmentPlace, hashKey, KeyStore, migrateControl, newKeyProblem } from "./api-keys.js";
import { bearerKey, scopesFor } from "./authenticate.js";
import { KeyCache } from "./key-cache.js";

describe("bearerKey", () => {
  it("reads Bearer KEY, tells a missing header from a malformed one", () => {
    expect(bearerKey(null)).toBeUndefined();
    expect(bearerKey("Bearer sw_abc")).toBe("sw_abc");
    expect(bearerKey("bearer sw_abc")).toBe("sw_abc");
    expect(bearerKey("Basic dXNlcjpwYXNz")).toBeNull();
    expect(bearerKey("Bearer ")).toBeNull();
    expect(bearerKey("Bearer two words")).toBeNull();
    expect(bearerKey(`Bearer ${"x".repeat(257)}`)).toBeNull();
  });
});

describe("scopesFor", () => {
  it("gives ingest to event and admin keys, workers to worker keys, run control to admin keys only", () => {
    expect(scopesFor("stepwise.v1.IngestService", "Send")).toEqual(["event", "admin"]);
    expect(scopesFor("stepwise.v1.WorkerService", "Connect")).toEqual(["worker"]);
    expect(scopesFor("stepwise.v1.RunService", "GetRun")).toEqual(["read", "admin"]);
    expect(scopesFor("stepwise.v1.RunService", "WatchRuns")).toEqual(["read", "admin"]);
    for (const m of ["CancelRun", "CancelRuns", "RerunRun", "ReplayRun", "RerunRuns"]) expect(scopesFor("stepwise.v1.RunService", m)).toEqual(["admin"]);
    expect(scopesFor("grpc.health.v1.Health", "Check")).toEqual(["admin"]);
  });
});

describe("environmentPlace", () => {
  it("keeps default where it was and gives every other environment a schema and prefix of its own", () => {
    expect(environmentPlace({ schema: "sw", prefix: "stepwise" }, "default")).toEqual({ schema: "sw", prefix: "stepwise" });
    expect(environmentPlace({ schema: "sw", prefix: "stepwise" }, "pr-12")).toEqual({ schema: "sw_env_pr_12", prefix: "stepwise-env-pr-12" });
    expect(environmentPlace({ schema: undefined, prefix: "stepwise" }, "staging")).toEqual({ schema: "stepwise_env_staging", prefix: "stepwise-env-staging" });
  });
});

describe("newKeyProblem", () => {
  it("says why a key cannot be made", () => {
    expect(newKeyProblem({ environment: "production", scope: "event" })).toBeUndefined();
    expect(newKeyProblem({ environment: "production", scope: "worker", app: "shop" })).toBeUndefined();
    expect(newKeyProblem({ environment: "Production", scope: "event" })).toMatch(/environment/);
    expect(newKeyProblem({ environment: "a".repeat(33), scope: "event" })).toMatch(/environment/);
    expect(newKeyProblem({ environment: "production", scope: "worker" })).toMatch(/one app/);
    expect(newKeyProblem({ environment: "production", scope: "worker", app: "a b" })).toMatch(/not an app id/);
    expect(newKeyProblem({ environment: "production", scope: "read", app: "shop" })).toMatch(/covers every app/);
    expect(newKeyProblem({ environment: "production", scope: "event", app: "shop" })).toBeUndefined();
    expect(newKeyProblem({ environment: "production", scope: "root" as never })).toMatch(/scope/);
  });
});

for (const backend of testBackends("auth")) {
  describe(`KeyStore and KeyCache on ${backend.name}`, () => {
    let db: TestDatabase;
    let keys: KeyStore;

    beforeAll(async () => {
      db = await backend.open();
      await migrateControl(db.sql, db.migrateOptions);
      await migrateControl(db.sql, db.migrateOptions); // twice: it is idempotent
      keys = new KeyStore(db.sql);
    });
    afterAll(() => db.drop());

    it("keeps only a key's hash, makes its environment, lists and revokes it", async () => {
      const { key, secret } = await keys.create({ environment: "staging", scope: "worker", app: "shop", name: "ci" });
      expect(key).toMatchObject({ environment: "staging", scope: "worker", app: "shop", name: "ci", revokedAt: null });
      const stored = await db.sql.query<{ key_hash: string }>("SELECT key_hash FROM api_keys WHERE id = $1", [key.id]);
      expect(stored[0]!.key_hash).toBe(hashKey(secret));
      expect(stored[0]!.key_hash).not.toContain(secret);
      expect(await keys.environments()).toContain("staging");
      expect((await keys.snapshot()).keys.get(hashKey(secret))).toMatchObject({ id: key.id });
      expect((await keys.list({ environment: "staging" })).map((k) => k.id)).toContain(key.id);
      const before = await keys.version();
      expect(await keys.revoke(key.id)).toBe(true);
      expect(await keys.revoke(key.id)).toBe(false);
      expect(await keys.revoke("not-a-uuid")).toBe(false);
      expect(await keys.version()).not.toBe(before);
      expect((await keys.snapshot()).keys.get(hashKey(secret))).toBeUndefined();
      expect((await keys.list({ environment: "staging" })).map((k) => k.id)).not.toContain(key.id);
      expect((await keys.list({ environment: "staging", includeRevoked: true })).find((k) => k.id === key.id)?.revokedAt).toBeInstanceOf(Date);
      await expect(keys.create({ environment: "Nope", scope: "event" })).rejects.toThrow(/environment/);
    });

    it("without refreshes, every miss reloads: a key made long after the last load, another right after it, a third later", async () => {
      // The timer never fires here, so only the miss path can find these keys.
      const cache = new KeyCache(keys, { refreshMs: 60_000 });
      await cache.start();
      const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
      try {
        for (const gap of [600, 0, 600, 0]) {
          await pause(gap);
          const { key, secret } = await keys.create({ environment: "pr-8", scope: "read" });
          const started = Date.now();
          expect((await cache.lookup(secret))?.id).toBe(key.id);
          expect(Date.now() - started).toBeLessThan(1_500);
        }
        expect(await cache.lookup("sw_unknown")).toBeUndefined();
      } finally {
        cache.stop();
      }
    });

    it("the cache finds a new key at once, refuses a revoked one after its refresh, and reports new environments", async () => {
      const seen: string[] = [];
      const cache = new KeyCache(keys, { refreshMs: 50, onEnvironment: (e) => seen.push(e) });
      await cache.start();
      try {
        // Made right after a load: the miss waits for the next one (500 ms after the last at most) and finds it.
        const { key, secret } = await keys.create({ environment: "pr-7", scope: "read" });
        expect((await cache.lookup(secret))?.id).toBe(key.id);
        const other = await keys.create({ environment: "pr-7", scope: "event" });
        const [a, b] = await Promise.all([cache.lookup(other.secret), cache.lookup(other.secret)]);
        expect([a?.id, b?.id]).toEqual([other.key.id, other.key.id]);
        expect(await cache.lookup("sw_unknown")).toBeUndefined();
        let told = 0;
        cache.onRevoked(key.id, () => told++);
        const stopped = cache.onRevoked(key.id, () => told++);
        stopped();
        await keys.revoke(key.id);
        await new Promise((r) => setTimeout(r, 300));
        expect(await cache.lookup(secret)).toBeUndefined();
        // Once, and only to the listener still waiting.
        expect(told).toBe(1);
        expect(seen).toContain("pr-7");
        expect(seen.filter((e) => e === "pr-7")).toHaveLength(1);
      } finally {
        cache.stop();
      }
    });
  });
}
