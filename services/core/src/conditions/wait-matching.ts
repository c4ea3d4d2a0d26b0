import { compileCondition, type ConditionEvent } from "./cel-condition.js";
import type { WaitEvent } from "../journal/wait-store.js";

/** An event in the shape conditions and handlers see: data decoded, ts as RFC 3339 text. */
export function conditionEvent(e: WaitEvent): ConditionEvent {
  return { id: e.id, name: e.name, data: JSON.parse(e.dataJson) as unknown, ts: new Date(e.tsMs).toISOString() };
}

/** The result a resolved step.waitForEvent journals: the event. */
export function waitOutputJson(e: WaitEvent): string {
  return `{"id":${JSON.stringify(e.id)},"name":${JSON.stringify(e.name)},"data":${e.dataJson},"ts":${JSON.stringify(new Date(e.tsMs).toISOString())}}`;
}

/**
 * True when a candidate event satisfies a wait's condition (null: any event
 * of the name). A stored condition that no longer compiles matches nothing.
 */
export function waitMatches(condition: string | null, runEvent: WaitEvent, candidate: WaitEvent): boolean {
  if (condition === null || condition === "") return true;
  try {
    return compileCondition(condition, ["event", "async"]).test({
      event: conditionEvent(runEvent),
      async: conditionEvent(candidate),
    });
  } catch {
    return false;
  }
}
