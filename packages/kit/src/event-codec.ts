import {
  type EventType,
  eventType,
  type NewEvent,
  type ProtoMessageFns,
  type RecordedEvent,
} from "./events.js";

/** A service's event messages by short name, e.g. { UserCreated: pb.UserCreated }. */
// biome-ignore lint/suspicious/noExplicitAny: the message types vary per entry.
export type EventMessages = { readonly [name: string]: ProtoMessageFns<any> };

/** The decoded payload type of one entry. */
export type EventData<F> = F extends ProtoMessageFns<infer T> ? T : never;

/** Everything about a recorded event except its type and payload. */
export type EventMeta = Omit<RecordedEvent, "type" | "data">;

/** The known events of a codec: { type: "UserCreated"; data: pb.UserCreated; meta } | ... */
export type KnownEvent<M extends EventMessages> = {
  [K in keyof M & string]: { readonly type: K; readonly data: EventData<M[K]>; readonly meta: EventMeta };
}[keyof M & string];

/**
 * An event whose type the codec does not know: written by a newer version of
 * the service, or another kind of event sharing the subject. Replays must not
 * crash on it, so decoding never throws for an unknown type; reducers and
 * projections handle it explicitly (usually: ignore it).
 */
export interface UnknownEvent {
  readonly type: "unknown";
  /** The type header as written, e.g. "spool.auth.v1.UserRenamed". */
  readonly eventType: string;
  readonly data: Uint8Array;
  readonly meta: EventMeta;
}

/** What a codec of these messages decodes to: one of its known events, or an unknown one. */
export type DecodedEvent<M extends EventMessages> = KnownEvent<M> | UnknownEvent;

/** The union a codec decodes to: `type UserEvent = EventOf<typeof UserEvents>`. */
// biome-ignore lint/suspicious/noExplicitAny: matches any codec.
export type EventOf<C extends EventCodec<any>> = C extends EventCodec<infer M> ? DecodedEvent<M> : never;

/** A known event without metadata, as a decider produces it (for tests and logs). */
export type EventBody<M extends EventMessages> = {
  [K in keyof M & string]: { readonly type: K; readonly data: EventData<M[K]> };
}[keyof M & string];

export interface EventCodec<M extends EventMessages> {
  /** Prepended to each short name to form the type header, e.g. "spool.auth.v1.". */
  readonly prefix: string;
  /** Per-type codecs by short name (create, is, decode of one type). */
  readonly types: { readonly [K in keyof M]: EventType<EventData<M[K]>> };
  /** The type header of a short name. */
  typeName(type: keyof M & string): string;
  /** An event ready to append. */
  create<K extends keyof M & string>(type: K, data: EventData<M[K]>): NewEvent;
  /** Decodes a recorded event once; an unknown type yields { type: "unknown" }, never an error. */
  decode(event: RecordedEvent): DecodedEvent<M>;
  /** A codec of some of these types (e.g. the events of one aggregate); the others decode as unknown. */
  pick<K extends keyof M & string>(...types: K[]): EventCodec<Pick<M, K>>;
}

/**
 * Turns a service's protobuf event messages into a codec and a discriminated
 * union. The type header of each is prefix + short name, so the names on the
 * log stay what they were (`eventType(prefix + name, ...)`).
 */
export function defineEvents<M extends EventMessages>(
  messages: M,
  options: { prefix: string; schemaVersion?: number },
): EventCodec<M> {
  if ("unknown" in messages) throw new Error('"unknown" is reserved for events a codec does not know');
  const types = Object.fromEntries(
    Object.entries(messages).map(([name, fns]) => [
      name,
      eventType(`${options.prefix}${name}`, fns, options.schemaVersion ?? 1),
    ]),
  ) as { [K in keyof M]: EventType<EventData<M[K]>> };
  return codecOf(options.prefix, types);
}

function codecOf<M extends EventMessages>(
  prefix: string,
  types: { [K in keyof M]: EventType<EventData<M[K]>> },
): EventCodec<M> {
  const byHeader = new Map<string, [string, EventType<unknown>]>(
    Object.entries(types).map(([name, t]) => [t.type, [name, t as EventType<unknown>]]),
  );
  return {
    prefix,
    types,
    typeName: (type) => types[type].type,
    create: (type, data) => types[type].create(data),
    decode: (event) => {
      const { type, data, ...meta } = event;
      const known = byHeader.get(type);
      if (!known) return { type: "unknown", eventType: type, data, meta };
      return { type: known[0], data: known[1].decode(data), meta } as KnownEvent<M>;
    },
    pick: (...names) =>
      codecOf(prefix, Object.fromEntries(names.map((n) => [n, types[n]])) as never) as never,
  };
}

/**
 * The exhaustiveness check closing a switch over an event union: it compiles
 * only when every case was handled. Reaching it at run time is a bug.
 */
export function unreachable(value: never): never {
  throw new Error(`unhandled case: ${JSON.stringify((value as { type?: unknown })?.type ?? value)}`);
}
