import type { Logger } from "../runtime/log.js";
import { type ApiKey, hashKey, type KeyStore } from "./api-keys.js";

/** How often a service looks whether a key was made or revoked: the bound on revocation. */
export const KEY_REFRESH_MS = 2_000;

/**
 * A key unknown to the cache makes it reload, at most this long after the
 * last load (a key made a moment ago is found, and waits at most this
 * long), so unknown keys cannot flood the journal.
 */
const MISS_RELOAD_MS = 500;

/**
 * The keys not revoked, held in memory by hash, so authenticating a call
 * costs no query. Every KEY_REFRESH_MS one small query reads the keys'
 * version (the latest change and the count), and a changed version
 * reloads them: a revoked key is refused within that bound on every
 * service. Each reload reads the environments too, and reports each one
 * new to this process to onEnvironment.
 */
export class KeyCache {
  private keys = new Map<string, ApiKey>();
  private version: string | undefined;
  private loadedAt = 0;
  private loading: Promise<void> | undefined;
  /** The reload that misses wait for, until it begins. */
  private missReload: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly known = new Set<string>();
  /** Calls waiting for a key's revocation, by key id: the streams opened with it. */
  private readonly revocations = new Map<string, Set<() => void>>();

  constructor(
    private readonly store: KeyStore,
    private readonly options: { refreshMs?: number; log?: Logger; onEnvironment?: (name: string) => void } = {},
  ) {}

  /** Loads the keys, then keeps them fresh until stop(). */
  async start(): Promise<void> {
    await this.reload();
    const every = this.options.refreshMs ?? KEY_REFRESH_MS;
    const tick = () => {
      this.timer = setTimeout(() => {
        void this.refresh().finally(tick);
      }, every);
      this.timer.unref();
    };
    tick();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * Calls fn once the key is revoked (seen at a reload), so a stream opened
   * with it can be ended; the returned function stops waiting.
   */
  onRevoked(keyId: string, fn: () => void): () => void {
    let set = this.revocations.get(keyId);
    if (!set) this.revocations.set(keyId, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.revocations.delete(keyId);
    };
  }

  /** The number of keys not revoked. */
  get size(): number {
    return this.keys.size;
  }

  /** The key a secret is, unless it is unknown or revoked. */
  async lookup(secret: string): Promise<ApiKey | undefined> {
    const hash = hashKey(secret);
    const key = this.keys.get(hash);
    if (key) return key;
    await this.reloadForMiss().catch(() => {});
    return this.keys.get(hash);
  }

  /**
   * A reload begun after the miss (a load already under way may predate
   * the key), MISS_RELOAD_MS after the last load at the earliest; the
   * misses until it begins share it.
   */
  private reloadForMiss(): Promise<void> {
    this.missReload ??= (async () => {
      // Always a timer, even of 0 ms: the body must not reach the line that
      // clears missReload before ??= has stored this promise, or the field
      // would keep a settled promise and no later miss would reload.
      const wait = Math.max(0, this.loadedAt + MISS_RELOAD_MS - Date.now());
      await new Promise((r) => setTimeout(r, wait));
      this.missReload = undefined;
      await this.loading?.catch(() => {});
      await this.reload();
    })();
    return this.missReload;
  }

  /** Reloads when the version moved. A failure keeps what was loaded and is logged. */
  private async refresh(): Promise<void> {
    try {
      // An environment is made with its first key, so a new one always moves the version.
      if ((await this.store.version()) !== this.version) await this.reload();
    } catch (err) {
      this.options.log?.warn({ err }, "refreshing the API keys failed; the ones loaded stay in use");
    }
  }

  private reload(): Promise<void> {
    this.loading ??= (async () => {
      try {
        const { version, keys } = await this.store.snapshot();
        this.keys = keys;
        this.version = version;
        this.loadedAt = Date.now();
        if (this.revocations.size > 0) {
          const active = new Set([...keys.values()].map((k) => k.id));
          for (const [id, fns] of [...this.revocations]) {
            if (active.has(id)) continue;
            this.revocations.delete(id);
            for (const fn of fns) fn();
          }
        }
        await this.readEnvironments();
      } finally {
        this.loading = undefined;
      }
    })();
    return this.loading;
  }

  private async readEnvironments(): Promise<void> {
    if (!this.options.onEnvironment) return;
    for (const name of await this.store.environments()) {
      if (this.known.has(name)) continue;
      this.known.add(name);
      this.options.onEnvironment(name);
    }
  }
}
