import { useEffect, useState } from "preact/hooks";
import { onKeyRefused, storedKey, storeKey } from "./client.js";
import { KeyPrompt } from "./components/key-prompt.js";
import { EventsPage } from "./pages/events.js";
import { FunctionPage, FunctionsPage } from "./pages/functions.js";
import { NotFoundPage } from "./pages/not-found.js";
import { RunPage } from "./pages/run.js";
import { RunsPage } from "./pages/runs.js";
import { WorkersPage } from "./pages/workers.js";
import { Link, useLocation } from "./router.js";

const NAV = [
  { href: "/runs", label: "Runs" },
  { href: "/functions", label: "Functions" },
  { href: "/events", label: "Events" },
  { href: "/workers", label: "Workers" },
];

/** The page a path shows. */
function Page(props: { path: string; query: URLSearchParams }) {
  const parts = props.path.split("/").filter((p) => p !== "").map(decodeURIComponent);
  const [section, a, b, extra] = parts;
  if (section === undefined || (section === "runs" && a === undefined)) return <RunsPage query={props.query} />;
  if (section === "runs" && a !== undefined && b === undefined) return <RunPage runId={a} key={a} />;
  if (section === "functions" && a === undefined) return <FunctionsPage />;
  if (section === "functions" && a !== undefined && b !== undefined && extra === undefined) return <FunctionPage appId={a} functionId={b} key={`${a}/${b}`} />;
  if (section === "events" && a === undefined) return <EventsPage query={props.query} />;
  if (section === "workers" && a === undefined) return <WorkersPage />;
  return <NotFoundPage />;
}

/** The dashboard: a bar of sections over the page of the address. */
export function App() {
  const { path, query } = useLocation();
  const current = "/" + (path.split("/")[1] || "runs");
  const [keyRefused, setKeyRefused] = useState(false);
  useEffect(() => onKeyRefused(() => setKeyRefused(true)), []);
  return (
    <>
      <header class="topbar">
        <Link href="/runs" class="brand">
          Stepwise
        </Link>
        <nav>
          {NAV.map((n) => (
            <Link href={n.href} class={n.href === current ? "active" : ""} key={n.href}>
              {n.label}
            </Link>
          ))}
        </nav>
        {storedKey() !== null && (
          <button
            type="button"
            class="secondary forget-key"
            onClick={() => {
              storeKey(null);
              window.location.reload();
            }}
          >
            Forget key
          </button>
        )}
      </header>
      <main>
        {keyRefused ? <KeyPrompt /> : <Page path={path} query={query} />}
      </main>
    </>
  );
}
