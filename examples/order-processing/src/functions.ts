import { Stepwise } from "@stepwise/sdk";
import { z } from "zod";

/** The shop's Stepwise client: its app id and the schema of each event it uses. */
export const stepwise = new Stepwise({
  appId: "shop",
  url: process.env["STEPWISE_URL"] ?? "http://127.0.0.1:8288",
  schemas: {
    "order.placed": z.object({
      orderId: z.string(),
      customerId: z.string(),
      items: z.array(z.object({ sku: z.string(), quantity: z.number().int().positive() })),
      totalCents: z.number().int().nonnegative(),
    }),
    "shipment.created": z.object({
      orderId: z.string(),
      trackingNumber: z.string(),
    }),
  },
});

/**
 * The order workflow: charge the payment, check the stock, schedule the
 * shipment, then wait up to 7 days for the warehouse's `shipment.created`
 * of this order before telling the customer. Each step's result is
 * journaled: if the worker or the engine dies midway, the run resumes after
 * the last journaled step and no customer is charged twice. While it waits
 * for the shipment the run holds no worker slot and no memory; a failing
 * step is retried with backoff (4 retries by default).
 */
export const orderProcessing = stepwise.createFunction(
  { id: "order-processing", triggers: [{ event: "order.placed" }], retries: 4 },
  async ({ event, step }) => {
    const { orderId, customerId, items, totalCents } = event.data;
    const payment = await step.run("process-payment", () => ({
      paymentId: `pay_${orderId}`,
      amountCents: totalCents,
      status: "captured",
    }));
    const inventory = await step.run("check-inventory", () => ({
      reserved: items.map((i) => ({ sku: i.sku, quantity: i.quantity })),
      inStock: true,
    }));
    const shipment = await step.run("schedule-shipment", () => ({
      shipmentId: `ship_${orderId}`,
      carrier: "acme-post",
      items: inventory.reserved.length,
    }));
    const shipped = await step.waitForEvent("wait-for-shipment", {
      event: "shipment.created",
      timeout: "7d",
      if: "event.data.orderId == async.data.orderId",
    });
    if (!shipped) {
      return { orderId, paymentId: payment.paymentId, shipmentId: shipment.shipmentId, shipped: false };
    }
    const tracking = String(shipped.data["trackingNumber"]);
    const notification = await step.run("send-notification", () => ({
      to: customerId,
      message: `Order ${orderId} is paid (${payment.paymentId}) and on its way with ${shipment.carrier}: ${tracking}.`,
    }));
    return {
      orderId,
      paymentId: payment.paymentId,
      shipmentId: shipment.shipmentId,
      tracking,
      notified: notification.to,
    };
  },
);
