import { Counter, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { CounterFamily, HistogramFamily } from "./metric-series.js";

describe("metric series", () => {
  it("a histogram family scrapes as the same text as prom-client's Histogram given the same observations", async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const buckets = [0.001, 0.01, 0.1, 1];
    const family = new HistogramFamily(ours, "x_seconds", "How long x took.", buckets, ["kind", "app"]);
    const reference = new Histogram({ name: "x_seconds", help: "How long x took.", buckets, labelNames: ["kind", "app"], registers: [theirs] });
    const observations: Array<[string, string, number]> = [
      ["a", "shop", 0.0005],
      ["a", "shop", 0.001],
      ["a", "shop", 0.05],
      ["b", "shop", 7],
      ["a", 'quote"and\\slash', 0.2],
    ];
    for (const [kind, app, v] of observations) {
      family.of(kind, app).observe(v);
      reference.labels(kind, app).observe(v);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    // The JSON too, but for prom-client's exemplar fields (none here).
    const samples = async (r: Registry) =>
      (await r.getMetricsAsJSON()).flatMap((m) =>
        (m.values as Array<{ metricName?: string; labels: object; value: number }>).map((v) => [v.metricName, v.labels, v.value]),
      );
    expect(await samples(ours)).toEqual(await samples(theirs));
  });

  it("an unlabelled histogram shows its zero buckets before any observation, as prom-client's does", async () => {
    const ours = new Registry();
    const theirs = new Registry();
    new HistogramFamily(ours, "y", "Y.", [1, 2]);
    new Histogram({ name: "y", help: "Y.", buckets: [1, 2], registers: [theirs] });
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  it("a counter family scrapes as prom-client's Counter, and keeps its series between scrapes", async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const family = new CounterFamily(ours, "runs_total", "Runs.", ["status"]);
    const reference = new Counter({ name: "runs_total", help: "Runs.", labelNames: ["status"], registers: [theirs] });
    const done = family.of("COMPLETED");
    done.value += 3;
    family.of("FAILED").value++;
    reference.labels("COMPLETED").inc(3);
    reference.labels("FAILED").inc();
    expect(await ours.metrics()).toBe(await theirs.metrics());
    done.value++;
    reference.labels("COMPLETED").inc();
    expect(await ours.metrics()).toBe(await theirs.metrics());
    const plain = new CounterFamily(ours, "events_total", "Events.");
    expect(await ours.metrics()).toContain("events_total 0");
    plain.of().value += 2;
    expect(await ours.metrics()).toContain("events_total 2");
  });

  it("refuses label values that do not match the names", () => {
    const family = new CounterFamily(new Registry(), "z_total", "Z.", ["a", "b"]);
    expect(() => family.of("only-one")).toThrow("expected 2 label values, got 1");
  });
});
