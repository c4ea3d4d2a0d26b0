import type { RunStatus } from "@stepwise/proto";
import { statusName } from "../format.js";

/** A run's status as a coloured label. */
export function StatusBadge(props: { status: RunStatus }) {
  const name = statusName(props.status);
  return <span class={`status status-${name.toLowerCase()}`}>{name}</span>;
}
