import type { ChildProcess } from "node:child_process";

type Reply = { rpc: number; ok: true; body: unknown } | { rpc: number; ok: false; error: string };

/**
 * Calls a forked child over its IPC channel: each call is a numbered
 * request answered once by the child's serveRpc handler. Pending calls fail
 * when the child exits.
 */
export class ChildRpc {
  private next = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly ready: Promise<void>;

  constructor(
    private readonly child: ChildProcess,
    private readonly name: string,
  ) {
    this.ready = new Promise<void>((resolve, reject) => {
      child.on("message", (m: unknown) => {
        if (isReady(m)) return resolve();
        if (!isReply(m)) return;
        const waiter = this.pending.get(m.rpc);
        this.pending.delete(m.rpc);
        if (m.ok) waiter?.resolve(m.body);
        else waiter?.reject(new Error(`${name}: ${m.error}`));
      });
      child.once("exit", (code, signal) => {
        const err = new Error(`${name} exited (${signal ?? code})`);
        reject(err);
        for (const w of this.pending.values()) w.reject(err);
        this.pending.clear();
      });
    });
    this.ready.catch(() => {});
  }

  /** Resolves once the child called announceReady; rejects if it exits first or after timeoutMs. */
  whenReady(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name} was not ready within ${timeoutMs} ms`)), timeoutMs);
    });
    return Promise.race([this.ready, timeout]).finally(() => clearTimeout(timer));
  }

  /** Sends a request and resolves with the child's answer. */
  call<R>(body: unknown): Promise<R> {
    const rpc = this.next++;
    return new Promise<R>((resolve, reject) => {
      this.pending.set(rpc, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ rpc, body }, (err) => {
        if (!err) return;
        this.pending.delete(rpc);
        reject(err);
      });
    });
  }
}

/** In a forked child: tells the parent it is ready for calls. */
export function announceReady(): void {
  process.send?.({ ready: true });
}

/**
 * In a forked child: answers the parent's ChildRpc calls with handler, and
 * exits when the parent goes away.
 */
export function serveRpc(handler: (body: unknown) => Promise<unknown>): void {
  process.on("message", (m: unknown) => {
    if (typeof m !== "object" || m === null || typeof (m as { rpc?: unknown }).rpc !== "number") return;
    const { rpc, body } = m as { rpc: number; body: unknown };
    handler(body).then(
      (result) => process.send?.({ rpc, ok: true, body: result } satisfies Reply),
      (err: unknown) => process.send?.({ rpc, ok: false, error: err instanceof Error ? err.stack ?? err.message : String(err) } satisfies Reply),
    );
  });
  process.on("disconnect", () => process.exit(1));
}

function isReady(m: unknown): boolean {
  return typeof m === "object" && m !== null && (m as { ready?: unknown }).ready === true;
}

function isReply(m: unknown): m is Reply {
  return typeof m === "object" && m !== null && typeof (m as { rpc?: unknown }).rpc === "number" && "ok" in m;
}
