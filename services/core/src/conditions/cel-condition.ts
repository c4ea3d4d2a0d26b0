import { MAX_CONDITION_LENGTH } from "@stepwise/proto";
import { celEnv, isCelError, parse, plan } from "@bufbuild/cel";
import type { Expr } from "@bufbuild/cel-spec/cel/expr/syntax_pb.js";
import { quote } from "../runtime/client-errors.js";

/** Variables a condition may use: `event`, and `async` in a wait. */
export type ConditionVariable = "event" | "async";

/** An event as a condition sees it. */
export interface ConditionEvent {
  id: string;
  name: string;
  data: unknown;
  ts: string;
}

/**
 * An equality `event.<path> == async.<path>` found among the top-level
 * conjuncts of a wait's condition: a wait can be found by the awaited
 * event's value at asyncPath without evaluating every wait's condition.
 */
export interface IndexedEquality {
  /** Path into the run's triggering event, such as ["data", "id"]. */
  eventPath: string[];
  /** Path into the candidate event, such as ["data", "orderId"]. */
  asyncPath: string[];
}

/** A compiled condition, ready to evaluate many times. */
export interface Condition {
  readonly source: string;
  /** The indexable equality, when the condition has one. */
  readonly equality: IndexedEquality | undefined;
  /**
   * True when the condition holds. A runtime error (a missing field, a type
   * mismatch) counts as false: an event that lacks the field does not match.
   */
  test(bindings: Partial<Record<ConditionVariable, ConditionEvent>>): boolean;
}

/** A condition that does not compile, with what is wrong. */
export class InvalidConditionError extends Error {
  override name = "InvalidConditionError";
}

const env = celEnv();
const cache = new Map<string, Condition>();
const CACHE_MAX = 10_000;

/** Longest condition accepted. */
export { MAX_CONDITION_LENGTH };

/** A compiled CEL expression of any type, such as a concurrency key. */
export interface Expression {
  readonly source: string;
  /** Its value; throws InvalidConditionError for a runtime error (a missing field, a type mismatch). */
  evaluate(bindings: Partial<Record<ConditionVariable, ConditionEvent>>): unknown;
}

/** Parses and plans an expression over the allowed variables; InvalidConditionError otherwise. */
function compileCel(source: string, allowed: readonly ConditionVariable[], boolean: boolean) {
  if (source.trim().length === 0) throw new InvalidConditionError("the expression is empty");
  if (source.length > MAX_CONDITION_LENGTH) {
    throw new InvalidConditionError(`the expression is longer than ${MAX_CONDITION_LENGTH} characters`);
  }
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(source);
  } catch (err) {
    throw new InvalidConditionError(celMessage(err));
  }
  const kind = boolean ? nonBooleanKind(parsed.expr) : undefined;
  if (kind) throw new InvalidConditionError(`the expression is ${kind}, not a condition that is true or false`);
  for (const name of identifiers(parsed.expr)) {
    if (!(allowed as readonly string[]).includes(name)) {
      throw new InvalidConditionError(
        `unknown variable ${quote(name)}: the expression may use ${allowed.map((a) => `\`${a}\``).join(" and ")}`,
      );
    }
  }
  try {
    return { parsed, evaluate: plan(env, parsed) };
  } catch (err) {
    throw new InvalidConditionError(celMessage(err));
  }
}

/**
 * Compiles a CEL condition once (cached by its text). Throws
 * InvalidConditionError when it does not parse or uses a variable other
 * than the allowed ones.
 */
export function compileCondition(source: string, allowed: readonly ConditionVariable[]): Condition {
  const key = `${allowed.join(",")}\u0000${source}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const { parsed, evaluate } = compileCel(source, allowed, true);
  const condition: Condition = {
    source,
    equality: allowed.includes("async") ? findEquality(parsed.expr) : undefined,
    test(bindings) {
      const result = evaluate(bindings as never);
      return !isCelError(result) && result === true;
    },
  };
  if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value as string);
  cache.set(key, condition);
  return condition;
}

/**
 * Compiles a CEL expression whose value is used as it is (a concurrency
 * key). Throws InvalidConditionError as compileCondition does.
 */
export function compileExpression(source: string, allowed: readonly ConditionVariable[]): Expression {
  const { evaluate } = compileCel(source, allowed, false);
  return {
    source,
    evaluate(bindings) {
      const result: unknown = evaluate(bindings as never);
      if (isCelError(result)) throw new InvalidConditionError(`the expression failed: ${celMessage(result)}`);
      return result;
    },
  };
}

/** The value at a path of a JSON value, or undefined. */
export function valueAt(value: unknown, path: readonly string[]): unknown {
  let v = value;
  for (const p of path) {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return undefined;
    v = (v as Record<string, unknown>)[p];
  }
  return v;
}

function celMessage(err: unknown): string {
  const cause = (err as { cause?: unknown }).cause;
  const raw = (cause as { rawMessage?: unknown } | undefined)?.rawMessage;
  if (typeof raw === "string") {
    const loc = (cause as { location?: { start?: { line?: number; column?: number } } }).location?.start;
    return loc ? `${raw} (line ${loc.line}, column ${loc.column})` : raw;
  }
  return err instanceof Error ? err.message : String(err);
}

/** Names of the free variables of an expression (comprehension variables excluded). */
function identifiers(expr: Expr | undefined, bound: ReadonlySet<string> = new Set()): Set<string> {
  const out = new Set<string>();
  const walk = (e: Expr | undefined, scope: ReadonlySet<string>): void => {
    if (!e) return;
    const k = e.exprKind;
    switch (k.case) {
      case "identExpr":
        if (!scope.has(k.value.name)) out.add(k.value.name);
        return;
      case "selectExpr":
        walk(k.value.operand, scope);
        return;
      case "callExpr":
        walk(k.value.target, scope);
        for (const a of k.value.args) walk(a, scope);
        return;
      case "listExpr":
        for (const a of k.value.elements) walk(a, scope);
        return;
      case "structExpr":
        for (const en of k.value.entries) {
          if (en.keyKind.case === "mapKey") walk(en.keyKind.value, scope);
          walk(en.value, scope);
        }
        return;
      case "comprehensionExpr": {
        const c = k.value;
        walk(c.iterRange, scope);
        walk(c.accuInit, scope);
        const inner = new Set([...scope, c.iterVar, c.accuVar, ...(c.iterVar2 ? [c.iterVar2] : [])]);
        walk(c.loopCondition, inner);
        walk(c.loopStep, inner);
        walk(c.result, inner);
        return;
      }
      default:
        return;
    }
  };
  walk(expr, bound);
  return out;
}

const ARITHMETIC = new Set(["_+_", "_-_", "_*_", "_/_", "_%_", "-_"]);

/** What an expression evidently is when it can never be a boolean (a literal, arithmetic), else undefined. */
function nonBooleanKind(e: Expr | undefined): string | undefined {
  const k = e?.exprKind;
  if (k?.case === "constExpr") return k.value.constantKind.case === "boolValue" ? undefined : "a constant";
  if (k?.case === "callExpr" && ARITHMETIC.has(k.value.function)) return "arithmetic";
  if (k?.case === "listExpr") return "a list";
  if (k?.case === "structExpr") return "a map or message";
  return undefined;
}

/** A select chain `root.a.b` as ["root", "a", "b"], or undefined. */
function selectPath(e: Expr | undefined): string[] | undefined {
  const path: string[] = [];
  let cur = e;
  while (cur) {
    const k = cur.exprKind;
    if (k.case === "selectExpr" && !k.value.testOnly) {
      path.unshift(k.value.field);
      cur = k.value.operand;
    } else if (k.case === "identExpr") {
      path.unshift(k.value.name);
      return path;
    } else {
      return undefined;
    }
  }
  return undefined;
}

function findEquality(expr: Expr | undefined): IndexedEquality | undefined {
  const k = expr?.exprKind;
  if (k?.case !== "callExpr") return undefined;
  if (k.value.function === "_&&_") {
    for (const a of k.value.args) {
      const found = findEquality(a);
      if (found) return found;
    }
    return undefined;
  }
  if (k.value.function !== "_==_" || k.value.args.length !== 2) return undefined;
  const [l, r] = k.value.args.map(selectPath);
  for (const [a, b] of [
    [l, r],
    [r, l],
  ] as const) {
    if (a?.[0] === "event" && b?.[0] === "async" && a.length > 1 && b.length > 1) {
      return { eventPath: a.slice(1), asyncPath: b.slice(1) };
    }
  }
  return undefined;
}
