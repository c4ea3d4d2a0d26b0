import { copyFileSync, mkdirSync } from "node:fs";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stepwise, Worker } from "@stepwise/sdk";
import { eventually, ROOT, runOfEventIn, Stack } from "./support/stack.js";

// The dashboard in a real browser (Debian's Chromium, headless, driven by
// playwright-core) against the engine as a user runs it: ingest, scheduler
// and executor as processes, ingest serving the dashboard at /, and a
// worker in this process serving an order function. Each page is saved as
// a screenshot in test/artifacts/dashboard/; with
// UPDATE_DASHBOARD_SCREENSHOTS=1 they are also copied to docs/images/.

const CHROMIUM = process.env["CHROMIUM_PATH"] ?? "/usr/bin/chromium";
const ARTIFACTS = `${ROOT}test/artifacts/dashboard`;
const DOC_IMAGES = `${ROOT}docs/images`;
const WAIT_MS = 20_000;

describe("dashboard in a browser", () => {
  const stack = new Stack();
  let client: Stepwise;
  let worker: Worker;
  let browser: Browser;
  let page: Page;
  /** Orders whose "charge" step failed once already. */
  const declined = new Set<string>();

  async function shot(name: string): Promise<void> {
    mkdirSync(ARTIFACTS, { recursive: true });
    const path = `${ARTIFACTS}/${name}.png`;
    await page.screenshot({ path, fullPage: true });
    if (process.env["UPDATE_DASHBOARD_SCREENSHOTS"]) {
      mkdirSync(DOC_IMAGES, { recursive: true });
      copyFileSync(path, `${DOC_IMAGES}/dashboard-${name}.png`);
    }
  }

  /** Waits until an element matching `selector` holds `text` (the page updates itself). */
  async function see(selector: string, text?: string | RegExp): Promise<void> {
    await page.locator(selector, text === undefined ? {} : { hasText: text }).first().waitFor({ state: "visible", timeout: WAIT_MS });
  }

  beforeAll(async () => {
    await stack.start();
    client = new Stepwise({ appId: "shop", url: stack.ingestUrl });
    const order = client.createFunction(
      { id: "order-processing", name: "Order processing", triggers: [{ event: "order.placed" }], retries: 2, backoff: { base: "200ms", jitter: false } },
      async ({ event, step }) => {
        const orderId = String(event.data["orderId"]);
        const order = await step.run("validate", () => ({ orderId, totalCents: Number(event.data["totalCents"] ?? 2400) }));
        const payment = await step.run("charge", () => {
          if (event.data["flaky"] === true && !declined.has(orderId)) {
            declined.add(orderId);
            throw new Error("card declined", { cause: new Error("payment gateway timed out after 3 s") });
          }
          return { paymentId: `pay-${orderId}`, cents: order.totalCents };
        });
        await step.sleep("settle", "1s");
        const shipment = await step.run("ship", () => ({ trackingNo: `TRK-${orderId}` }));
        return { orderId, paymentId: payment.paymentId, trackingNo: shipment.trackingNo };
      },
    );
    const hold = client.createFunction({ id: "order-hold", triggers: [{ event: "order.held" }] }, async ({ step }) => {
      await step.run("reserve", () => ({ reserved: true }));
      const paid = await step.waitForEvent("wait-for-payment", { event: "payment.received", timeout: "1h", match: "data.orderId" });
      return { paid: paid !== null };
    });
    worker = new Worker({ url: stack.executorUrl, functions: [order, hold], capacity: 4, handleSignals: false });
    await worker.connect();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on("pageerror", (err) => process.stderr.write(`page error: ${err.message}\n`));
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await worker?.close();
    client?.close();
    await stack.stop();
  });

  let completedRunId = "";

  it("the runs list shows a completed order run", async () => {
    const [eventId] = await client.send({ name: "order.placed", data: { orderId: "o-1001", totalCents: 2400, flaky: true } });
    const run = await runOfEventIn(client, eventId!, "COMPLETED", WAIT_MS);
    completedRunId = run.id;
    await page.goto(`${stack.ingestUrl}/`);
    await see(`tr[data-run="${run.id}"]`, "COMPLETED");
    const row = page.locator(`tr[data-run="${run.id}"]`);
    expect(await row.textContent()).toContain("order-processing");
    expect(await row.textContent()).toContain("order.placed");
    await shot("runs");
  });

  it("clicking it shows the timeline with its steps and outputs", async () => {
    await page.locator(`tr[data-run="${completedRunId}"] a`).first().click();
    await page.waitForURL(`**/runs/${completedRunId}`);
    await see(".waterfall");
    for (const key of ["validate:0", "charge:0", "settle:0", "ship:0"]) await see(`.waterfall [data-step="${key}"]`);
    // The failed first attempt of "charge", its error and its cause.
    await see(`.waterfall [data-step="attempt:charge:0:1"]`, "card declined");
    await see(".attempt", "payment gateway timed out after 3 s");
    await see(`.waterfall [data-step="settle:0"]`, "slept until");
    await see(`.step[data-step="ship:0"]`, "TRK-o-1001");
    await see(`.step[data-step="charge:0"]`, "pay-o-1001");
    await see("pre[aria-label='Run output']", "TRK-o-1001");
    await see("pre[aria-label='Event payload']", "o-1001");
    await see("h1 .status", "COMPLETED");
    await shot("run");
  });

  it("a waiting run is cancelled from its page and shows CANCELLED", async () => {
    const [eventId] = await client.send({ name: "order.held", data: { orderId: "o-2002" } });
    const run = await runOfEventIn(client, eventId!, "WAITING", WAIT_MS);
    await page.goto(`${stack.ingestUrl}/runs/${run.id}`);
    await see("h1 .status", "WAITING");
    await see(`.waterfall [data-step="await:wait-for-payment:0"]`, "waiting for event payment.received");
    await shot("run-waiting");
    await page.getByRole("button", { name: "Cancel run" }).click();
    await page.locator("input[name=reason]").fill("customer called to cancel");
    await page.getByRole("button", { name: "Confirm cancel" }).click();
    await see("h1 .status", "CANCELLED");
    await see(".error-detail", "customer called to cancel");
    const after = await client.getRun(run.id);
    expect(after.status).toBe("CANCELLED");
    expect(after.error).toMatchObject({ name: "RunCancelled", message: "customer called to cancel" });
    await shot("run-cancelled");
  });

  it("the send-event form creates a run that appears without a reload", async () => {
    await page.goto(`${stack.ingestUrl}/events`);
    await see("h1", "Events");
    // A reload would lose this.
    await page.evaluate(() => ((globalThis as unknown as { notReloaded: boolean }).notReloaded = true));
    await page.locator("input[name=event-name]").fill("order.placed");
    await page.locator("textarea[name=event-data]").fill('{"orderId":"o-3003","totalCents":990}');
    await page.getByRole("button", { name: "Send event" }).click();
    await see(".sent .sent-runs a", "shop/order-processing");
    const sentId = await page.locator(".sent").getAttribute("data-sent-event");
    expect(sentId).toBeTruthy();
    const [run] = await client.listRunsOfEvent(sentId!);
    expect(run?.functionId).toBe("order-processing");
    // The list of events shows it too, with its run, as the page reads again.
    await see(`tr[data-event="${sentId}"]`, "order-processing");
    await runOfEventIn(client, sentId!, "COMPLETED", WAIT_MS);
    await see(".sent .sent-runs li", "COMPLETED");
    expect(await page.evaluate(() => (globalThis as unknown as { notReloaded?: boolean }).notReloaded)).toBe(true);
    await shot("events");
    await page.locator(".sent .sent-runs a").first().click();
    await page.waitForURL(`**/runs/${run!.id}`);
    await see("h1 .status", "COMPLETED");
  });

  it("the workers page shows the connected worker, its functions and capacity", async () => {
    await page.goto(`${stack.ingestUrl}/workers`);
    await see(`.card[data-app="shop"] tr[data-worker]`);
    const row = page.locator(`.card[data-app="shop"] tr[data-worker]`);
    expect(await row.count()).toBe(1);
    const text = (await row.textContent()) ?? "";
    expect(text).toContain("order-processing");
    expect(text).toContain("order-hold");
    expect(text).toMatch(/\d+ \/ 4/);
    expect(text).toContain("@stepwise/sdk");
    await shot("workers");
  });

  it("the functions page shows each function with its triggers and the last hour's runs", async () => {
    await page.goto(`${stack.ingestUrl}/functions`);
    await see(`tr[data-function="shop/order-processing"]`, "event order.placed");
    await see(`tr[data-function="shop/order-processing"] .count`, "COMPLETED");
    await see(`tr[data-function="shop/order-hold"] .count`, "CANCELLED");
    await shot("functions");
    await page.locator(`tr[data-function="shop/order-processing"] a`).first().click();
    await page.waitForURL("**/functions/shop/order-processing");
    await see("pre[aria-label='Function configuration']", '"retries": 2');
    await see("table tr", "order.placed");
    await shot("function");
  });

  it("an unknown run id shows a clear not-found page", async () => {
    await page.goto(`${stack.ingestUrl}/runs/0193f1c2-0000-7000-8000-000000000000`);
    await see("h1", "Run not found");
    await see(".not-found", "No run has the id 0193f1c2-0000-7000-8000-000000000000");
    await shot("not-found");
    await page.goto(`${stack.ingestUrl}/runs/not-a-run-id`);
    await see("h1", "Run not found");
  });

  it("filters the runs by status and pages through them, live", async () => {
    await page.goto(`${stack.ingestUrl}/runs?status=CANCELLED`);
    await see("tr[data-run]", "CANCELLED");
    expect(await page.locator("tr[data-run]", { hasText: "COMPLETED" }).count()).toBe(0);
    await page.goto(`${stack.ingestUrl}/runs?status=COMPLETED`);
    const before = await page.locator("tr[data-run]").count();
    // A run that completes while the page is open appears on it.
    const [eventId] = await client.send({ name: "order.placed", data: { orderId: "o-4004" } });
    const run = await runOfEventIn(client, eventId!, "COMPLETED", WAIT_MS);
    await see(`tr[data-run="${run.id}"]`, "COMPLETED");
    expect(await page.locator("tr[data-run]").count()).toBe(before + 1);
    await eventually(async () => ((await page.locator("tr[data-run]").count()) > 0 ? true : undefined), 5_000);
  });
});
