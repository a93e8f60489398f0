// One typed definition per service of its streams and their subjects: the
// owner creates the streams from it, consumers filter and parse with it, and
// no subject is ever spelled out as a string literal elsewhere.
import { type StreamDefinition, subjectMatches } from "./event-store.js";

/** Subjects `<base>.<id>`, one per aggregate, e.g. family("auth.user")("42") = "auth.user.42". */
export interface SubjectFamily<Id extends string = string> {
  (id: Id): string;
  readonly base: string;
  /** Every subject of the family, e.g. "auth.user.>": a consumer's filter. */
  readonly all: string;
  /** The id in one of the family's subjects (relative, without the namespace); throws for any other. */
  idOf(subject: string): Id;
}

/** One fixed subject, e.g. single("auth.keys")() = "auth.keys". */
export interface SingleSubject {
  (): string;
  readonly base: string;
  /** The subject itself, as a filter. */
  readonly all: string;
}

/** What a stream definition needs of a subject: a family or a single subject. */
export interface SubjectDef {
  readonly base: string;
  readonly all: string;
}

/** A family of subjects `<base>.<id>`. Ids are validated (subject tokens) before they get here. */
export function family<Id extends string = string>(base: string): SubjectFamily<Id> {
  const head = `${base}.`;
  const build = (id: Id) => `${head}${id}`;
  return Object.assign(build, {
    base,
    all: `${head}>`,
    idOf(subject: string): Id {
      const id = subject.startsWith(head) ? subject.slice(head.length) : "";
      if (!id || id.includes(".")) throw new Error(`subject ${subject} is not one of ${head}<id>`);
      return id as Id;
    },
  });
}

/** A single fixed subject. */
export function single(subject: string): SingleSubject {
  return Object.assign(() => subject, { base: subject, all: subject });
}

export interface StreamSpec {
  subjects: Record<string, SubjectDef>;
  /** The stream's subject filters (default: each subject definition's `all`). */
  filters?: readonly string[];
}

/** Options of the stream set when it is created, by its owner (retention may come from configuration). */
export type StreamSettings = Omit<StreamDefinition, "name" | "subjects">;

/** One stream of a service: its logical name, subjects and filters. */
export interface StreamContract<
  N extends string = string,
  S extends Record<string, SubjectDef> = Record<string, SubjectDef>,
> {
  /** Logical name, e.g. "AUTH"; the namespace adds its prefix. */
  readonly name: N;
  readonly subjects: S;
  readonly filters: readonly string[];
  /** What EventStore.ensureStream takes: only the stream's owner creates it. */
  definition(settings?: StreamSettings): StreamDefinition;
}

/**
 * The streams a service owns, e.g.
 * `defineStreams({ GEN: { subjects: { generation: family("gen.generation") } } })`.
 * Throws at once when a subject falls outside its stream's filters.
 */
export function defineStreams<D extends Record<string, StreamSpec>>(
  specs: D,
): { readonly [N in keyof D & string]: StreamContract<N, D[N]["subjects"]> } {
  const out: Record<string, StreamContract> = {};
  for (const [name, spec] of Object.entries(specs)) {
    const defs = Object.values(spec.subjects);
    const filters = [...(spec.filters ?? defs.map((d) => d.all))];
    for (const d of defs) {
      if (!filters.some((f) => subjectMatches(f, d.all)))
        throw new Error(`stream ${name}: subject ${d.all} is outside its filters ${filters.join(", ")}`);
    }
    out[name] = {
      name,
      subjects: spec.subjects,
      filters,
      definition: (settings = {}) => ({ ...settings, name, subjects: [...filters] }),
    };
  }
  return out as never;
}
