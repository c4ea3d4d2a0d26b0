import { prettyJson } from "../format.js";

/** A JSON value, indented, in a scrollable block. */
export function JsonBlock(props: { value: unknown; label?: string }) {
  return (
    <pre class="json" aria-label={props.label}>
      {props.value === undefined ? "—" : prettyJson(props.value)}
    </pre>
  );
}
