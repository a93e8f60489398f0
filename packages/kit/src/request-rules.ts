// Request validation, declared once per service next to its policies and
// enforced by the kit before any method body runs (auth/guard.ts, after the
// caller is authorized, so an anonymous or unauthorized probe learns nothing
// about request shapes). A service declares, for every method, rules over the
// decoded ts-proto request; a violation is named by the proto field path the
// rule sits at ("messages[1].content", "parameters.top_p"), derived from the
// object keys as in validation.ts. Rules are shape only: lengths, formats,
// ranges, counts, allowlists, checks across fields of the one request. Rules
// needing state (an email already taken, who may grant what) stay in app/.
import { type FieldViolation, InvalidArgumentError } from "./errors.js";
import { sequenceProblem, snakeCase, timestampMsProblem } from "./validation.js";

/** Collects the violations of one request, each named by its proto field path. */
export class Violations {
  readonly #list: FieldViolation[] = [];

  /** Records `problem` (if any) against `field`. */
  check(field: string, problem: string | undefined): this {
    if (problem) this.#list.push({ field, description: problem });
    return this;
  }

  get list(): readonly FieldViolation[] {
    return this.#list;
  }

  /** Throws INVALID_ARGUMENT with every violation, so a caller fixes everything at once. */
  throwIfAny(): void {
    const first = this.#list[0];
    if (first)
      throw new InvalidArgumentError(`${first.field || "request"}: ${first.description}`, this.#list);
  }
}

/** Checks the value found at proto field path `field`, recording what is wrong in `v`. */
export type Rule<T> = (value: T, field: string, v: Violations) => void;

/**
 * Rules for some fields of a message, by ts-proto (lowerCamelCase) key; each
 * runs in the order written, at the field's snake_case path. Fields without a
 * rule get only the generic checks every request gets (validation.ts).
 */
export type FieldRules<T> = { readonly [K in keyof T]?: Rule<T[K]> };

/** What a method's request must satisfy: field rules, or one rule over the whole message. */
export type MessageRules<T> = FieldRules<T> | Rule<T>;

type RequestOf<M> = M extends { requestDeserialize: (bytes: Buffer) => infer Req } ? Req : never;

/**
 * Rules for every method of a service definition, as `ServicePolicies`: a
 * method without an entry does not compile; `{}` means nothing beyond the
 * generic checks. For a client- or bidi-streaming method they are the rules
 * of each message the client sends, checked per message with checkRequest.
 */
export type RequestRules<D> = { readonly [K in keyof D]: MessageRules<RequestOf<D[K]>> };

/** The violations of `message` under `rules` (at `field`, "" for a request). */
export function ruleViolations<T>(rules: MessageRules<T>, message: T, field = ""): readonly FieldViolation[] {
  const v = new Violations();
  asRule(rules)(message, field, v);
  return v.list;
}

/**
 * Throws INVALID_ARGUMENT naming every violated field when `message` breaks
 * `rules`. The guard calls it for each request; a streaming handler calls it
 * for each message its client sends.
 */
export function checkRequest<T>(rules: MessageRules<T>, message: T): void {
  const v = new Violations();
  asRule(rules)(message, "", v);
  v.throwIfAny();
}

function asRule<T>(rules: MessageRules<T>): Rule<T> {
  return typeof rules === "function" ? rules : fields(rules);
}

function join(path: string, name: string): string {
  return path ? `${path}.${name}` : name;
}

// --- building rules ------------------------------------------------------------

/** A rule from a predicate answering what is wrong with a value (undefined: nothing). */
function check<T>(problem: (value: T) => string | undefined): Rule<T> {
  return (value, field, v) => {
    v.check(field, problem(value));
  };
}

/** Every rule, in order. */
function all<T>(...rules: Rule<T>[]): Rule<T> {
  return (value, field, v) => {
    for (const rule of rules) rule(value, field, v);
  };
}

/** A nested message's field rules (nothing to check when it is absent), plus rules over the whole message. */
function fields<T>(rules: FieldRules<T>, ...whole: Rule<T>[]): Rule<T | undefined> {
  const entries = Object.entries(rules) as [string, Rule<unknown>][];
  return (message, field, v) => {
    if (message === undefined || message === null) return;
    for (const [key, rule] of entries)
      rule((message as Record<string, unknown>)[key], join(field, snakeCase(key)), v);
    for (const rule of whole) rule(message, field, v);
  };
}

/** The rule for each element of a repeated field, at `field[i]`. */
function each<T>(inner: Rule<T>): Rule<readonly T[]> {
  return (items, field, v) => {
    items.forEach((item, i) => {
      inner(item, `${field}[${i}]`, v);
    });
  };
}

/** The rule when an optional field is set. */
function optional<T>(rule: Rule<T>): Rule<T | undefined> {
  return (value, field, v) => {
    if (value !== undefined) rule(value, field, v);
  };
}

/** A string that is not blank and has at most `max` characters (UTF-16 code units). */
function required(max: number): Rule<string> {
  return check((value) => {
    if (value.trim().length === 0) return "is required";
    if (value.length > max) return `must be at most ${max} characters`;
    return undefined;
  });
}

/** A string matching `pattern`; `description` says what is expected. */
function matches(pattern: RegExp, description: string): Rule<string> {
  return check((value) => (pattern.test(value) ? undefined : description));
}

/** An int64 millisecond timestamp (0: not set) no store or Date mishandles; see timestampMsProblem. */
const timestampMs: Rule<bigint | number> = check(timestampMsProblem);

/** An int64 stream sequence a JavaScript number holds exactly; see sequenceProblem. */
const sequence: Rule<bigint | number> = check(sequenceProblem);

/**
 * The rule builders, e.g. `{ userId: rule.check(userIdProblem), name: rule.required(200) }`,
 * `messages: rule.each(rule.fields({ content: rule.required(1_000) }))`.
 */
export const rule = { check, all, fields, each, optional, required, matches, timestampMs, sequence } as const;
