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
  },
});

/**
 * The order workflow: charge the payment, check the stock, schedule the
 * shipment, tell the customer. Each step's result is journaled: if the
 * worker or the engine dies midway, the run resumes after the last
 * journaled step and no customer is charged twice.
 */
export const orderProcessing = stepwise.createFunction(
  { id: "order-processing", triggers: [{ event: "order.placed" }] },
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
    const notification = await step.run("send-notification", () => ({
      to: customerId,
      message: `Order ${orderId} is paid (${payment.paymentId}) and ships with ${shipment.carrier}.`,
    }));
    return { orderId, paymentId: payment.paymentId, shipmentId: shipment.shipmentId, notified: notification.to };
  },
);
