import { describe, expect, it } from "vitest";
import { loadConfig } from "./config.js";

describe("loadConfig", () => {
  it("reads the step limit and the TLS files, with their defaults", () => {
    const plain = loadConfig({});
    expect(plain.maxStepsPerRun).toBe(10_000);
    expect(plain.tls).toBeUndefined();
    const set = loadConfig({ STEPWISE_MAX_STEPS_PER_RUN: "50", STEPWISE_TLS_CERT_FILE: "/c.pem", STEPWISE_TLS_KEY_FILE: "/k.pem" });
    expect(set.maxStepsPerRun).toBe(50);
    expect(set.tls).toEqual({ certFile: "/c.pem", keyFile: "/k.pem" });
  });

  it("refuses a TLS certificate without its key, and a step limit that is not a positive integer, naming the variables", () => {
    expect(() => loadConfig({ STEPWISE_TLS_CERT_FILE: "/c.pem" })).toThrow(/STEPWISE_TLS_CERT_FILE and STEPWISE_TLS_KEY_FILE: set both, or neither/);
    expect(() => loadConfig({ STEPWISE_MAX_STEPS_PER_RUN: "0" })).toThrow(/STEPWISE_MAX_STEPS_PER_RUN/);
  });

  it("reads STEPWISE_RETENTION as minutes, hours or days, and refuses anything else", () => {
    expect(loadConfig({}).retentionMs).toBeUndefined();
    expect(loadConfig({ STEPWISE_RETENTION: "30d" }).retentionMs).toBe(30 * 86_400_000);
    expect(loadConfig({ STEPWISE_RETENTION: "12h" }).retentionMs).toBe(12 * 3_600_000);
    expect(loadConfig({ STEPWISE_RETENTION: "90m" }).retentionMs).toBe(90 * 60_000);
    for (const bad of ["0d", "30", "1.5d", "30s", "-1d", "d"]) expect(() => loadConfig({ STEPWISE_RETENTION: bad }), bad).toThrow(/STEPWISE_RETENTION/);
  });
});
