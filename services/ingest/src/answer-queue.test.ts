import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { AnswerQueue } from "./answer-queue.js";

describe("AnswerQueue", () => {
  it("hands over what is ready; with gather, also what comes later in the same turn", async () => {
    const q = new AnswerQueue<number>(() => true);
    q.push(1);
    expect(await q.next()).toEqual([1]);
    const next = q.next(true);
    q.push(2);
    queueMicrotask(() => q.push(3));
    setTimeout(() => q.push(4), 5);
    expect(await next).toEqual([2, 3]);
    expect(await q.next()).toEqual([4]);
  });

  it("ends once the requests ended and nothing is owed, after the answers still queued", async () => {
    let owed = 1;
    const q = new AnswerQueue<string>(() => owed > 0);
    q.endRequests();
    const waiting = q.next();
    q.push("last");
    owed = 0;
    expect(await waiting).toEqual(["last"]);
    expect(await q.next()).toBeUndefined();
  });

  it("throws what the request side failed with, and ends at close without sending what is queued", async () => {
    const failing = new AnswerQueue<string>(() => true);
    failing.fail(new ConnectError("bad request", Code.InvalidArgument));
    await expect(failing.next()).rejects.toMatchObject({ code: Code.InvalidArgument });

    const closing = new AnswerQueue<string>(() => true);
    const waiting = closing.next();
    closing.close();
    expect(await waiting).toBeUndefined();
    closing.push("late");
    expect(await closing.next()).toBeUndefined();
  });
});
