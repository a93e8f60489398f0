import { type Logger, UnavailableError } from "@spool/kit";
import type { FollowItem } from "./decode.js";
import { FollowGapError, FollowTimeoutError } from "./errors.js";
import { type JsMsg, type LogCursor, raceWith } from "./log-cursor.js";
import type { Ring } from "./ring.js";
import type { Subscription } from "./subscription.js";

export interface FollowerTiming {
  heartbeatMs: number;
  /** No event for this long fails the follow (Infinity: no bound). */
  idleMs: number;
  /** A log read that delivered nothing for this long is reopened. */
  stallMs: number;
}

/** Whether the follow goes on after a step. */
type Turn = "continue" | "end";

/**
 * One follow of a subject: a cursor over its per-event sequence that takes
 * exactly `delivered + 1` next, from the subscription's ring when it holds
 * it and from a one-off read of the log otherwise. Each turn of run() is one
 * step: deliver from the ring, read the log, or wait for the subscription.
 */
export class Follower<T> {
  readonly #sub: Subscription<T>;
  readonly #signal: AbortSignal;
  readonly #timing: FollowerTiming;
  readonly #logger: Logger;
  /** The last sequence delivered: the follower takes exactly delivered + 1 next. */
  #delivered: number;
  #lastYield = Date.now();
  #lastEvent = this.#lastYield;
  #cursor: LogCursor | undefined;
  /** Stream sequence of the subject's last message when the cursor opened: the read ends there. */
  #cursorEnd = 0;
  /** `delivered` when the cursor opened: a read that ends without moving it found a gap. */
  #cursorFrom = 0;
  /** When the cursor opened or last delivered a message. */
  #cursorActive = 0;

  constructor(
    sub: Subscription<T>,
    after: number,
    signal: AbortSignal,
    timing: FollowerTiming,
    logger: Logger,
  ) {
    this.#sub = sub;
    this.#delivered = after;
    this.#signal = signal;
    this.#timing = timing;
    this.#logger = logger;
  }

  async *run(): AsyncGenerator<FollowItem<T>> {
    try {
      while ((yield* this.#turn()) === "continue") {}
    } finally {
      this.#closeCursor();
    }
  }

  async *#turn(): AsyncGenerator<FollowItem<T>, Turn> {
    if (this.#finished()) return "end";
    const sub = this.#sub;
    if (sub.anchored) {
      const want = this.#delivered + 1;
      if (this.#readsFromRing(sub.ring, want)) {
        this.#closeCursor();
        const e = sub.ring.get(want);
        if (e) return yield* this.#deliver(e);
      }
      if (this.#cursor !== undefined || want < sub.ring.first) return yield* this.#readLog(want);
    }
    return yield* this.#awaitChange();
  }

  /** True when the follow is over; throws when it cannot go on. */
  #finished(): boolean {
    const sub = this.#sub;
    if (this.#signal.aborted) return true;
    if (sub.closed) throw new UnavailableError("the follow hub is closed");
    if (sub.terminalSeq !== undefined && this.#delivered >= sub.terminalSeq) return true;
    if (sub.failure && this.#delivered + 1 >= sub.failure.at) throw sub.failure.error;
    return false;
  }

  /**
   * A follower reading the log stays on it until it is in the newer half of
   * the ring, so a slow reader does not flap between the two at the edge.
   */
  #readsFromRing(ring: Ring<T>, want: number): boolean {
    const inRing = want >= ring.first && want < ring.next;
    return inRing && (this.#cursor === undefined || want - ring.first >= ring.size >> 1);
  }

  async *#deliver(e: {
    sequence: number;
    terminal: boolean;
    payload: T;
  }): AsyncGenerator<FollowItem<T>, Turn> {
    this.#delivered = e.sequence;
    this.#lastYield = this.#lastEvent = Date.now();
    yield { kind: "event", sequence: e.sequence, terminal: e.terminal, payload: e.payload };
    return e.terminal ? "end" : "continue";
  }

  /** One read from the log, opening it first when needed. */
  async *#readLog(want: number): AsyncGenerator<FollowItem<T>, Turn> {
    const cursor = this.#cursor ?? (await this.#openCursor(want));
    if (cursor === undefined) return "end";
    const { heartbeatMs, idleMs, stallMs } = this.#timing;
    const deadline = Math.min(
      this.#lastYield + heartbeatMs,
      this.#lastEvent + idleMs,
      this.#cursorActive + stallMs,
    );
    const r = await readCursor(cursor, this.#signal, deadline - Date.now());
    switch (r.kind) {
      case "aborted":
        return "end";
      case "lost":
        // Reopened on the next turn, from the closest mark at or below what comes next.
        this.#closeCursor();
        return "continue";
      case "timeout":
        return yield* this.#onReadTimeout();
      case "message":
        this.#cursorActive = Date.now();
        return yield* this.#deliverMessage(r.msg);
    }
  }

  /** Opens a log read from `want` to the subject's current end; undefined when aborted meanwhile. */
  async #openCursor(want: number): Promise<LogCursor | undefined> {
    const sub = this.#sub;
    const end = await sub.lastStoredSequence();
    if (end === 0) throw new FollowGapError(sub.subject, want, sub.ring.first);
    this.#cursor = await sub.openCursor(want);
    this.#cursorEnd = end;
    this.#cursorFrom = this.#delivered;
    this.#cursorActive = Date.now();
    return this.#signal.aborted ? undefined : this.#cursor;
  }

  async *#onReadTimeout(): AsyncGenerator<FollowItem<T>, Turn> {
    const now = Date.now();
    this.#checkIdle(now);
    if (now >= this.#cursorActive + this.#timing.stallMs) {
      this.#logger.warn({ subject: this.#sub.subject }, "log read for a follower stalled; reopening it");
      this.#closeCursor();
    } else {
      yield* this.#heartbeatIfDue(now);
    }
    return "continue";
  }

  /** Delivers the events of a message read from the log that come next, skipping older ones. */
  async *#deliverMessage(m: JsMsg): AsyncGenerator<FollowItem<T>, Turn> {
    const sub = this.#sub;
    const events = sub.decode(m);
    const first = events[0];
    if (first) sub.marks.add(first.sequence, m.seq);
    for (const e of events) {
      if (e.sequence <= this.#delivered) continue;
      if (e.sequence > this.#delivered + 1) {
        throw new FollowGapError(sub.subject, this.#delivered + 1, e.sequence);
      }
      if ((yield* this.#deliver(e)) === "end" || this.#signal.aborted) return "end";
    }
    if (m.seq >= this.#cursorEnd || m.info.pending === 0) {
      this.#closeCursor();
      // The log was read to its end without the next event, yet the ring starts past it.
      if (this.#delivered === this.#cursorFrom && this.#delivered + 1 < sub.ring.first) {
        throw new FollowGapError(sub.subject, this.#delivered + 1, sub.ring.first);
      }
    }
    return "continue";
  }

  /** Nothing to deliver yet: waits for the subscription (its anchor or the next event). */
  async *#awaitChange(): AsyncGenerator<FollowItem<T>, Turn> {
    const { heartbeatMs, idleMs } = this.#timing;
    const deadline = Math.min(this.#lastYield + heartbeatMs, this.#lastEvent + idleMs);
    const r = await raceWith(this.#sub.changed, this.#signal, deadline - Date.now());
    if (r === "aborted") return "end";
    if (r === "timeout") {
      const now = Date.now();
      this.#checkIdle(now);
      yield* this.#heartbeatIfDue(now);
    }
    return "continue";
  }

  #checkIdle(now: number): void {
    const { idleMs } = this.#timing;
    if (now >= this.#lastEvent + idleMs) throw new FollowTimeoutError(this.#sub.subject, idleMs);
  }

  async *#heartbeatIfDue(now: number): AsyncGenerator<FollowItem<T>, void> {
    if (now < this.#lastYield + this.#timing.heartbeatMs) return;
    this.#lastYield = now;
    yield { kind: "heartbeat" };
  }

  #closeCursor(): void {
    this.#cursor?.close();
    this.#cursor = undefined;
  }
}

async function readCursor(
  cursor: LogCursor,
  signal: AbortSignal,
  timeoutMs: number,
): ReturnType<LogCursor["next"]> {
  try {
    return await cursor.next(signal, timeoutMs);
  } catch (e) {
    throw new UnavailableError("cannot read the log", { cause: e });
  }
}
