import type { EventMessage } from "@spool/kit";

/** What the hub needs to know of one event: its place, whether it ends the subject, and its content. */
export interface Decoded<T> {
  /** Position of the event on its subject: 1, 2, 3, … with no gap. */
  sequence: number;
  /** True for the last event of the subject (a generation's completed / failed / cancelled). */
  terminal: boolean;
  payload: T;
}

/**
 * Reads the events of one stored message. A message usually holds one event;
 * one holding several (a batch appended together) returns them in order.
 */
export type Decoder<T> = (msg: EventMessage) => Decoded<T> | readonly Decoded<T>[];

export type FollowItem<T> =
  | { kind: "event"; sequence: number; terminal: boolean; payload: T }
  | { kind: "heartbeat" };

function isList<T>(v: Decoded<T> | readonly Decoded<T>[]): v is readonly Decoded<T>[] {
  return Array.isArray(v);
}

/** Decodes a message's events and checks they are consecutive positive sequences. */
export function decodeAll<T>(decode: Decoder<T>, msg: EventMessage): readonly Decoded<T>[] {
  const out = decode(msg);
  const events = isList(out) ? out : [out];
  if (events.length === 0) throw new Error(`message ${msg.seq} on ${msg.subject} holds no event`);
  let previous: number | undefined;
  for (const e of events) {
    if (!Number.isSafeInteger(e.sequence) || e.sequence < 1) {
      throw new Error(`message ${msg.seq} on ${msg.subject} holds an event with sequence ${e.sequence}`);
    }
    if (previous !== undefined && e.sequence !== previous + 1) {
      throw new Error(`message ${msg.seq} on ${msg.subject} holds non-consecutive sequences`);
    }
    previous = e.sequence;
  }
  return events;
}
