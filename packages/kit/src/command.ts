import { ConcurrencyError } from "./errors.js";
import type { AppendOptions, EventStore, Loaded, Reducer } from "./event-store.js";
import type { EventMetadata, NewEvent, RecordedEvent } from "./events.js";

export interface CommandOptions<S, E = unknown> extends EventMetadata {
  /** Aggregate subject, relative (e.g. "auth.user.42"). */
  subject: string;
  reducer: Reducer<S, E>;
  /** Pure decision: the events the command produces given the current state (may be none). */
  decide: (state: S, version: number) => readonly NewEvent[];
  /** Attempts on a concurrency conflict before giving up with ConcurrencyError (default 10). */
  maxAttempts?: number;
  /** Deduplication id for the append; the same id on every retry of the same command. */
  messageId?: string;
}

export interface CommandResult<S> {
  state: S;
  /** Stream sequence written (or the aggregate's version when nothing was written). */
  sequence: number;
  events: readonly NewEvent[];
  attempts: number;
}

/**
 * Load, decide, append with optimistic concurrency; on a conflict reload and
 * decide again, so concurrent commands on one aggregate serialise with no lost
 * update. Backs off with jitter between attempts.
 */
export async function handleCommand<S, E>(
  store: EventStore,
  options: CommandOptions<S, E>,
): Promise<CommandResult<S>> {
  const maxAttempts = options.maxAttempts ?? 10;
  for (let attempt = 1; ; attempt++) {
    const { state, version } = await store.load(options.subject, options.reducer);
    const events = options.decide(state, version);
    if (events.length === 0) return { state, sequence: version, events, attempts: attempt };
    const appendOptions: AppendOptions = {
      expectedSequence: version,
      ...(options.messageId ? { messageId: options.messageId } : {}),
      ...(options.correlationId ? { correlationId: options.correlationId } : {}),
      ...(options.causationId ? { causationId: options.causationId } : {}),
      ...(options.actor ? { actor: options.actor } : {}),
      ...(options.traceParent ? { traceParent: options.traceParent } : {}),
    };
    try {
      const result = await store.append(options.subject, events, appendOptions);
      if (result.duplicate) {
        // An earlier attempt of this very command was stored; its state is on the log.
        store.forget(options.subject);
        const reloaded = await store.load(options.subject, options.reducer);
        return { state: reloaded.state, sequence: result.sequence, events, attempts: attempt };
      }
      return {
        state: applyLocally(store, options, state, events, result),
        sequence: result.sequence,
        events,
        attempts: attempt,
      };
    } catch (e) {
      if (!(e instanceof ConcurrencyError) || attempt >= maxAttempts) throw e;
      const backoff = Math.min(200, 2 ** attempt) * Math.random();
      await new Promise((r) => setTimeout(r, backoff));
    }
  }
}

function applyLocally<S, E>(
  store: EventStore,
  options: CommandOptions<S, E>,
  state: S,
  events: readonly NewEvent[],
  result: { sequence: number; stream: string },
): S {
  let next = state;
  events.forEach((e, index) => {
    const recorded: RecordedEvent = {
      stream: result.stream,
      subject: options.subject,
      streamSequence: result.sequence,
      index,
      type: e.type,
      schemaVersion: e.schemaVersion,
      eventId: e.eventId ?? "",
      data: e.data,
      time: new Date(),
      correlationId: options.correlationId,
      causationId: options.causationId,
      actor: options.actor,
    };
    next = options.reducer.evolve(next, options.reducer.decode(recorded));
  });
  store.remember(options.subject, {
    state: next,
    version: result.sequence,
    reducer: options.reducer as Reducer<unknown, never>,
  });
  return next;
}

/** What a command on a bound aggregate takes besides its id and decision. */
export type AggregateCommandOptions = Omit<CommandOptions<unknown>, "subject" | "reducer" | "decide">;

/** An aggregate type bound to a store: its subject and reducer given once. */
export interface Aggregate<S, I> {
  subject(id: I): string;
  load(id: I): Promise<Loaded<S>>;
  /** handleCommand on the aggregate with this id. */
  handle(
    id: I,
    decide: (state: S, version: number) => readonly NewEvent[],
    options?: AggregateCommandOptions,
  ): Promise<CommandResult<S>>;
}

/**
 * Binds an aggregate's subject and reducer to a store, e.g.
 * `const users = aggregate(store, { subject: Subjects.user, reducer: userReducer })`,
 * then `users.handle(id, decide, { actor })` and `users.load(id)`.
 * A singleton aggregate (one subject) binds `() => subject` and passes no id.
 */
export function aggregate<S, E, I = void>(
  store: EventStore,
  definition: { subject: (id: I) => string; reducer: Reducer<S, E> },
): Aggregate<S, I> {
  const { subject, reducer } = definition;
  return {
    subject,
    load: (id) => store.load(subject(id), reducer),
    handle: (id, decide, options = {}) =>
      handleCommand(store, { ...options, subject: subject(id), reducer, decide }),
  };
}
