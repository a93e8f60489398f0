import { randomUUID } from "node:crypto";
import { type MsgHdrs, headers as natsHeaders } from "@nats-io/transport-node";
import { EventBatch } from "@spool/proto/spool/kit/v1/envelope.js";

/** Header names carried by every event message. */
export const Headers = {
  EventType: "Spool-Event-Type",
  SchemaVersion: "Spool-Schema-Version",
  EventId: "Spool-Event-Id",
  CorrelationId: "Spool-Correlation-Id",
  CausationId: "Spool-Causation-Id",
  Actor: "Spool-Actor",
  Time: "Spool-Time",
  TraceParent: "traceparent",
} as const;

/** Event-type header value of a message carrying several events. */
export const BATCH_TYPE = "spool.kit.v1.EventBatch";

/** The encode/decode pair ts-proto generates for a message. */
export interface ProtoMessageFns<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
}

/** A typed event kind: its protobuf name, schema version and codec. */
export interface EventType<T> {
  readonly type: string;
  readonly schemaVersion: number;
  encode(value: T): Uint8Array;
  decode(bytes: Uint8Array): T;
  /** An event of this type, ready to append. */
  create(value: T): NewEvent;
  /** True when a recorded event is of this type. */
  is(event: RecordedEvent): boolean;
}

export function eventType<T>(type: string, fns: ProtoMessageFns<T>, schemaVersion = 1): EventType<T> {
  return {
    type,
    schemaVersion,
    encode: (value) => fns.encode(value).finish(),
    decode: (bytes) => fns.decode(bytes),
    create: (value) => ({ type, schemaVersion, data: fns.encode(value).finish() }),
    is: (event) => event.type === type,
  };
}

export interface NewEvent {
  type: string;
  schemaVersion: number;
  data: Uint8Array;
  /** Defaults to a fresh UUID. */
  eventId?: string;
}

/** Who and why: carried in headers of every message a command writes. */
export interface EventMetadata {
  correlationId?: string;
  causationId?: string;
  /** The authenticated principal that caused the events (user or service id). */
  actor?: string;
  traceParent?: string;
}

export interface RecordedEvent {
  /** Stream name (with prefix). */
  stream: string;
  /** Subject relative to the namespace (without prefix). */
  subject: string;
  /** Stream sequence of the message holding the event. */
  streamSequence: number;
  /** Position of the event inside its message (0 for single-event messages). */
  index: number;
  type: string;
  schemaVersion: number;
  eventId: string;
  data: Uint8Array;
  time: Date;
  correlationId: string | undefined;
  causationId: string | undefined;
  actor: string | undefined;
}

/** Builds the headers and payload of one message holding a command's events. */
export function encodeMessage(
  events: readonly NewEvent[],
  meta: EventMetadata,
  now = new Date(),
): { headers: MsgHdrs; data: Uint8Array } {
  if (events.length === 0) throw new Error("a message needs at least one event");
  const h = natsHeaders();
  h.set(Headers.Time, now.toISOString());
  if (meta.correlationId) h.set(Headers.CorrelationId, meta.correlationId);
  if (meta.causationId) h.set(Headers.CausationId, meta.causationId);
  if (meta.actor) h.set(Headers.Actor, meta.actor);
  if (meta.traceParent) h.set(Headers.TraceParent, meta.traceParent);
  const only = events.length === 1 ? events[0] : undefined;
  if (only) {
    h.set(Headers.EventType, only.type);
    h.set(Headers.SchemaVersion, String(only.schemaVersion));
    h.set(Headers.EventId, only.eventId ?? randomUUID());
    return { headers: h, data: only.data };
  }
  h.set(Headers.EventType, BATCH_TYPE);
  h.set(Headers.SchemaVersion, "1");
  const batch = EventBatch.encode({
    events: events.map((e) => ({
      type: e.type,
      schemaVersion: e.schemaVersion,
      eventId: e.eventId ?? randomUUID(),
      data: Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength),
    })),
  }).finish();
  h.set(Headers.EventId, randomUUID());
  return { headers: h, data: batch };
}

/** The minimum a stored or delivered JetStream message offers. */
export interface EventMessage {
  subject: string;
  seq: number;
  data: Uint8Array;
  headers?: MsgHdrs | undefined;
}

/** Unpacks one message into its events (one, or the batch it carries). */
export function decodeMessage(
  msg: EventMessage,
  stream: string,
  relativeSubject: (full: string) => string,
): RecordedEvent[] {
  const h = msg.headers;
  const type = h?.get(Headers.EventType) ?? "";
  const timeHeader = h?.get(Headers.Time);
  const base = {
    stream,
    subject: relativeSubject(msg.subject),
    streamSequence: msg.seq,
    time: timeHeader ? new Date(timeHeader) : new Date(0),
    correlationId: h?.get(Headers.CorrelationId) || undefined,
    causationId: h?.get(Headers.CausationId) || undefined,
    actor: h?.get(Headers.Actor) || undefined,
  };
  if (type === BATCH_TYPE) {
    return EventBatch.decode(msg.data).events.map((e, index) => ({
      ...base,
      index,
      type: e.type,
      schemaVersion: e.schemaVersion,
      eventId: e.eventId,
      data: e.data,
    }));
  }
  return [
    {
      ...base,
      index: 0,
      type,
      schemaVersion: Number(h?.get(Headers.SchemaVersion) ?? "1") || 1,
      eventId: h?.get(Headers.EventId) ?? "",
      data: msg.data,
    },
  ];
}
