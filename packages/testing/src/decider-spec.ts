import { expect } from "vitest";

// Structural copies of the kit's NewEvent and RecordedEvent: the kit's own tests use this package.
interface NewEvent {
  type: string;
  schemaVersion: number;
  data: Uint8Array;
  eventId?: string;
}

interface RecordedEvent extends Required<NewEvent> {
  stream: string;
  subject: string;
  streamSequence: number;
  index: number;
  time: Date;
  correlationId: string | undefined;
  causationId: string | undefined;
  actor: string | undefined;
}

/** The folding half of an aggregate: what the kit's Reducer offers. */
export interface SpecReducer<S, E> {
  initial(): S;
  evolve(state: S, event: E): S;
  decode(event: RecordedEvent): E;
}

/** A past event, recorded now (the spec's clock) or at a given time in ms. */
export type GivenEvent = NewEvent | { event: NewEvent; atMs: number };

/** What a decision may be: its events, or a richer result carrying them. */
type Decision = readonly NewEvent[] | { readonly events: readonly NewEvent[] };

/** An expected event: its short type and (a subset of) its payload. */
export interface ExpectedEvent {
  type: string;
  data?: unknown;
}

/** An aggregate's history, and the decisions taken on it. */
export interface Given<S> {
  /** The state the given events fold to. */
  readonly state: S;
  /** More events on top of these. */
  given(...events: GivenEvent[]): Given<S>;
  when<D extends Decision>(decide: (state: S) => D): When<S, D>;
}

/** A decision taken on a history: assert what it wrote, or that it was refused. */
export interface When<S, D> {
  /** The decision's events, decoded, equal the expected ones (data matched as a subset). Returns the decision. */
  thenEvents(...expected: ExpectedEvent[]): D;
  /** The decision writes nothing. Returns it. */
  thenNothing(): D;
  /** The decision is refused with an error matching (as vitest's toThrow). */
  thenThrows(matcher?: string | RegExp | (new (...args: never[]) => unknown)): void;
  /** The state after the decision's events (recorded at atMs, default the spec's clock). */
  state(atMs?: number): S;
}

export interface DeciderSpecOptions {
  /** Subject the events are recorded on (default "spec.aggregate"). */
  subject?: string;
  /** Time of events given without one (default 2023-11-14T22:13:20Z). */
  nowMs?: number;
}

/**
 * Given / when / then for a decider: `spec.given(e1, e2).when((s) => decide(s)).thenEvents({ type: "X" })`.
 * Events travel as they would on the log: each given event is encoded,
 * decoded by the reducer and folded; the decision's events are decoded the
 * same way before they are compared, so a test also proves they round-trip.
 */
export function deciderSpec<S, E extends { type: string }>(
  reducer: SpecReducer<S, E>,
  options: DeciderSpecOptions = {},
): { given(...events: GivenEvent[]): Given<S> } {
  const subject = options.subject ?? "spec.aggregate";
  const nowMs = options.nowMs ?? 1_700_000_000_000;
  let sequence = 0;
  const record = (e: NewEvent, atMs: number, index = 0): E =>
    reducer.decode({
      stream: "SPEC",
      subject,
      streamSequence: ++sequence,
      index,
      type: e.type,
      schemaVersion: e.schemaVersion,
      eventId: e.eventId ?? `e${sequence}`,
      data: e.data,
      time: new Date(atMs),
      correlationId: undefined,
      causationId: undefined,
      actor: undefined,
    });
  const fold = (state: S, events: readonly GivenEvent[]): S =>
    events.reduce(
      (s, g) =>
        "atMs" in g ? reducer.evolve(s, record(g.event, g.atMs)) : reducer.evolve(s, record(g, nowMs)),
      state,
    );
  /** Decoded events without their metadata, for comparison. */
  const bodies = (events: readonly NewEvent[]) =>
    events.map((e, i) => {
      const { meta: _meta, ...body } = record(e, nowMs, i) as E & { meta: unknown };
      return body;
    });

  const given = (state: S): Given<S> => ({
    /** The state the given events fold to. */
    state,
    /** More events on top of these. */
    given: (...events: GivenEvent[]) => given(fold(state, events)),
    when: <D extends Decision>(decide: (state: S) => D): When<S, D> => {
      let outcome: { decision: D } | { error: unknown };
      try {
        outcome = { decision: decide(state) };
      } catch (error) {
        outcome = { error };
      }
      const decided = (): D => {
        if ("error" in outcome) throw outcome.error;
        return outcome.decision;
      };
      const eventsOf = (d: D): readonly NewEvent[] => ("events" in d ? d.events : (d as readonly NewEvent[]));
      return {
        /** The decision's events, decoded, equal the expected ones (data matched as a subset). Returns the decision. */
        thenEvents: (...expected: ExpectedEvent[]): D => {
          const d = decided();
          expect(bodies(eventsOf(d))).toMatchObject(expected);
          return d;
        },
        /** The decision writes nothing. Returns it. */
        thenNothing: (): D => {
          const d = decided();
          expect(eventsOf(d)).toEqual([]);
          return d;
        },
        /** The decision is refused with an error matching (as vitest's toThrow). */
        thenThrows: (matcher?: string | RegExp | (new (...args: never[]) => unknown)) => {
          expect(decided).toThrow(matcher as never);
        },
        /** The state after the decision's events (recorded at atMs, default the spec's clock). */
        state: (atMs = nowMs): S =>
          eventsOf(decided()).reduce((s, e, i) => reducer.evolve(s, record(e, atMs, i)), state),
      };
    },
  });

  return {
    /** The aggregate's history; none for a new aggregate. */
    given: (...events: GivenEvent[]) => given(fold(reducer.initial(), events)),
  };
}
