import type { ComponentChildren, JSX } from "preact";
import { useEffect, useState } from "preact/hooks";

// Client-side routes on the History API: ingest answers index.html for
// each of them (dashboard-files.ts), and this picks the page.

const NAVIGATED = "stepwise:navigate";

/** The current path and query, kept in step with the address bar. */
export function useLocation(): { path: string; query: URLSearchParams } {
  const [href, setHref] = useState(() => window.location.pathname + window.location.search);
  useEffect(() => {
    const update = () => setHref(window.location.pathname + window.location.search);
    window.addEventListener("popstate", update);
    window.addEventListener(NAVIGATED, update);
    return () => {
      window.removeEventListener("popstate", update);
      window.removeEventListener(NAVIGATED, update);
    };
  }, []);
  const url = new URL(href, window.location.origin);
  return { path: url.pathname, query: url.searchParams };
}

/** Goes to a path of the dashboard without reloading the page; `replace` keeps the history entry. */
export function navigate(to: string, replace = false): void {
  if (replace) window.history.replaceState(null, "", to);
  else window.history.pushState(null, "", to);
  window.dispatchEvent(new Event(NAVIGATED));
}

/** An anchor that navigates in the page (a modified click still opens a tab). */
export function Link(props: { href: string; class?: string; title?: string; children: ComponentChildren }): JSX.Element {
  const onClick = (e: MouseEvent) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(props.href);
  };
  return (
    <a href={props.href} class={props.class} title={props.title} onClick={onClick}>
      {props.children}
    </a>
  );
}

/** The query string of a path with some parameters changed (empty values removed). */
export function withQuery(path: string, query: URLSearchParams, changes: Record<string, string | undefined>): string {
  const next = new URLSearchParams(query);
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined || v === "") next.delete(k);
    else next.set(k, v);
  }
  const qs = next.toString();
  return qs ? `${path}?${qs}` : path;
}
