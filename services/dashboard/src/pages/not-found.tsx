import { Link } from "../router.js";

/** What the dashboard shows for a path it does not know, or a run that does not exist. */
export function NotFoundPage(props: { title?: string; message?: string }) {
  return (
    <section class="not-found">
      <h1>{props.title ?? "Page not found"}</h1>
      <p>{props.message ?? `Nothing is at ${window.location.pathname}.`}</p>
      <p>
        <Link href="/runs">Back to the runs</Link>
      </p>
    </section>
  );
}
