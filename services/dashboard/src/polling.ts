import { ConnectError } from "@connectrpc/connect";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";

/** How often a page that shows live state reads it again while the tab is visible. */
export const POLL_MS = 1500;

/** What a polled read gives a page. */
export interface Polled<T> {
  data: T | undefined;
  error: ConnectError | undefined;
  /** True until the first read of the current inputs answered. */
  loading: boolean;
  /** Reads again now (after an action). */
  reload: () => void;
}

/**
 * Reads `load` now and again every `intervalMs` while `live` and the page
 * is visible (a hidden tab reads once it is shown again), discarding the
 * answers of reads made for earlier `deps`. The dashboard's live updates:
 * WatchRuns is a bidirectional stream, which browsers cannot open, and a
 * read of one page of an index every 1.5 s per open tab costs the engine
 * less than a stream held for it.
 */
export function usePolled<T>(load: () => Promise<T>, deps: readonly unknown[], live = true, intervalMs = POLL_MS): Polled<T> {
  const [state, setState] = useState<{ data: T | undefined; error: ConnectError | undefined; loading: boolean }>({
    data: undefined,
    error: undefined,
    loading: true,
  });
  const generation = useRef(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);

  // New inputs: forget what the old ones read.
  useEffect(() => {
    setState({ data: undefined, error: undefined, loading: true });
  }, deps);

  useEffect(() => {
    const gen = ++generation.current;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;
    let inFlight = false;
    const run = async () => {
      timer = undefined;
      if (document.visibilityState === "hidden" || inFlight) return;
      inFlight = true;
      try {
        const data = await loadRef.current();
        if (gen === generation.current) setState({ data, error: undefined, loading: false });
      } catch (err) {
        if (gen === generation.current) setState((s) => ({ data: s.data, error: ConnectError.from(err), loading: false }));
      } finally {
        inFlight = false;
      }
      if (!stopped && live) timer = setTimeout(() => void run(), intervalMs);
    };
    const onVisible = () => {
      if (document.visibilityState === "visible" && timer === undefined && !stopped && live) void run();
    };
    void run();
    document.addEventListener("visibilitychange", onVisible);
    return () => {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisible);
    };
  }, [...deps, live, tick]);

  return { ...state, reload };
}
