import { type Logger, UnavailableError } from "@spool/kit";
import type { Backfill } from "./backfill.js";
import type { FollowItem } from "./decode.js";
import { FollowGapError, FollowTimeoutError } from "./errors.js";
import type { JsMsg, LogCursor } from "./log-cursor.js";
import type { Ring } from "./ring.js";
import type { Subscription, Waiter } from "./subscription.js";

export interface FollowerTiming {
  heartbeatMs: number;
  /** No event for this long fails the follow (Infinity: no bound). */
  idleMs: number;
  /** A log read that delivered nothing for this long is reopened. */
  stallMs: number;
}

/** An event as a follow gives it. */
export type FollowEvent<T> = Extract<FollowItem<T>, { kind: "event" }>;

/**
 * Takes an event straight from the subscription, synchronously: true when
 * it was delivered (the follow will not yield it), false when it could not
 * be (the follow yields it, and every later one, as usual). See
 * FollowOptions.direct.
 */
export type DirectDelivery<T> = (event: FollowEvent<T>) => boolean;

/** Whether the follow goes on after a step. */
type Turn = "continue" | "end";

/** How a follower gets its subscription and gives it back (the hub's reference count). */
export interface SubscriptionLease<T> {
  acquire(): Subscription<T>;
  release(sub: Subscription<T>): void;
}

/**
 * One follow of a subject: a cursor over its per-event sequence that takes
 * exactly `delivered + 1` next, from the subscription's ring when it holds
 * it and from a one-off read of the log otherwise. Each turn of run() is one
 * step: deliver from the ring, read the log, or wait for the subscription.
 *
 * Waiting is cheap on purpose (it happens once per event per follower): the
 * subscription wakes the follower directly; the abort listener is added once
 * for the whole follow, and one timer per follower covers the heartbeat and
 * idle deadlines, re-armed only when it fires (not set and cleared per event).
 */
export class Follower<T> implements Waiter {
  readonly #lease: SubscriptionLease<T>;
  #sub: Subscription<T> | undefined;
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
  /** The signal's state, kept by one listener (a composite signal's `aborted` getter is not free). */
  #aborted = false;
  readonly #onAbort = () => {
    this.#aborted = true;
    this.wake();
  };
  /** Resolves the current wait, if any. */
  #resume: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** The shared catch-up read this follower takes events from, while behind the ring. */
  #backfill: Backfill<T> | undefined;
  /** Holds one of the hub's slots for reading the log alone (released with the cursor). */
  #holdsSlot = false;
  /** This catch-up's shared read ran dry: read the log alone until back on the ring. */
  #backfillDone = false;
  /** When the pending timer fires. */
  #timerAt = 0;
  readonly #direct: DirectDelivery<T> | undefined;

  constructor(
    lease: SubscriptionLease<T>,
    after: number,
    signal: AbortSignal,
    timing: FollowerTiming,
    logger: Logger,
    direct?: DirectDelivery<T>,
  ) {
    this.#lease = lease;
    this.#delivered = after;
    this.#signal = signal;
    this.#timing = timing;
    this.#logger = logger;
    this.#direct = direct;
  }

  /** Ends the current wait (the subscription changed, the timer fired, a slot came free, or the follow was aborted). */
  wake(): void {
    const resume = this.#resume;
    if (resume === undefined) return;
    this.#resume = undefined;
    this.#sub?.unwait(this);
    resume();
  }

  /**
   * The subscription changed while this follower waited. A live follower
   * with direct delivery hands the new events to it right here and keeps
   * waiting: no promise, generator step or microtask turn per event, the
   * cost that dominated per-delivery CPU (docs/BENCHMARKS.md). Anything else
   * (the terminal event, a refusal, a gap, a failure) resumes the follow.
   */
  changed(): void {
    if (this.#resume === undefined) return;
    if (this.#direct !== undefined && this.#deliverDirect(this.#direct)) {
      // Still waiting: the subscription's notify took this follower off its waiting list.
      this.#sub?.wait(this);
      return;
    }
    this.wake();
  }

  /** Delivers what the ring holds next through `direct`; false when the follow itself must go on. */
  #deliverDirect(direct: DirectDelivery<T>): boolean {
    const sub = this.#sub;
    if (
      sub === undefined ||
      this.#aborted ||
      !sub.anchored ||
      sub.closed ||
      sub.failure !== undefined ||
      this.#cursor !== undefined ||
      this.#backfill !== undefined ||
      this.#holdsSlot
    ) {
      return false;
    }
    const ring = sub.ring;
    const want = this.#delivered + 1;
    if (want < ring.first) return false;
    let now = 0;
    for (let seq = want; seq < ring.next; seq++) {
      const e = ring.get(seq);
      if (e === undefined || e.terminal) return false;
      let taken: boolean;
      try {
        taken = direct({ kind: "event", sequence: e.sequence, terminal: false, payload: e.payload });
      } catch {
        // Not the subscription's problem (it is fanning out to others): the follow's own send says why.
        taken = false;
      }
      if (!taken) return false;
      this.#delivered = e.sequence;
      now ||= Date.now();
      this.#lastYield = this.#lastEvent = now;
    }
    return true;
  }

  async *run(): AsyncGenerator<FollowItem<T>> {
    if (this.#signal.aborted) return;
    const sub = this.#lease.acquire();
    this.#sub = sub;
    this.#signal.addEventListener("abort", this.#onAbort, { once: true });
    try {
      while (!this.#finished(sub)) {
        if (sub.anchored) {
          const want = this.#delivered + 1;
          if (this.#readsFromRing(sub.ring, want)) {
            this.#closeCursor();
            this.#leaveBackfill(sub);
            this.#backfillDone = false;
            const e = sub.ring.get(want);
            if (e) {
              // Inline (not a delegated generator): this is the per-event path.
              this.#delivered = e.sequence;
              this.#lastYield = this.#lastEvent = Date.now();
              yield { kind: "event", sequence: e.sequence, terminal: e.terminal, payload: e.payload };
              if (e.terminal) return;
              continue;
            }
          }
          if (this.#cursor === undefined && want < sub.ring.first) {
            const b = this.#backfillFor(sub, want);
            if (b) {
              const e = b.get(want);
              if (e) {
                this.#delivered = e.sequence;
                this.#lastYield = this.#lastEvent = Date.now();
                yield { kind: "event", sequence: e.sequence, terminal: e.terminal, payload: e.payload };
                if (e.terminal) return;
                continue;
              }
              // Not read yet: the backfill wakes the subscription's waiters as it reads.
              if ((yield* this.#awaitChange(sub)) === "end") return;
              continue;
            }
          }
          if (this.#cursor !== undefined || want < sub.ring.first) {
            if ((yield* this.#readLog(sub, want)) === "end") return;
            continue;
          }
        }
        if ((yield* this.#awaitChange(sub)) === "end") return;
      }
    } finally {
      this.#signal.removeEventListener("abort", this.#onAbort);
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = undefined;
      sub.unwait(this);
      this.#closeCursor();
      sub.slots.forget(this);
      this.#leaveBackfill(sub);
      this.#lease.release(sub);
    }
  }

  /** True when the follow is over; throws when it cannot go on. */
  #finished(sub: Subscription<T>): boolean {
    if (this.#aborted) return true;
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
  async *#readLog(sub: Subscription<T>, want: number): AsyncGenerator<FollowItem<T>, Turn> {
    if (this.#cursor === undefined && !this.#holdsSlot) {
      // The hub caps followers reading alone at once; the rest wait their turn (heartbeats go on).
      if (!(sub.slots.takeGrant(this) || sub.slots.tryAcquire(this))) return yield* this.#awaitChange(sub);
      this.#holdsSlot = true;
    }
    const cursor = this.#cursor ?? (await this.#openCursor(sub, want));
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
        return yield* this.#deliverMessage(sub, r.msg);
    }
  }

  /** Opens a log read from `want` to the subject's current end; undefined when aborted meanwhile. */
  async #openCursor(sub: Subscription<T>, want: number): Promise<LogCursor | undefined> {
    const end = await sub.lastStoredSequence();
    if (end === 0) throw new FollowGapError(sub.subject, want, sub.ring.first);
    this.#cursor = await sub.openCursor(want);
    this.#cursorEnd = end;
    this.#cursorFrom = this.#delivered;
    this.#cursorActive = Date.now();
    return this.#aborted ? undefined : this.#cursor;
  }

  async *#onReadTimeout(): AsyncGenerator<FollowItem<T>, Turn> {
    const now = Date.now();
    this.#checkIdle(now);
    if (now >= this.#cursorActive + this.#timing.stallMs) {
      this.#logger.warn({ subject: this.#sub?.subject }, "log read for a follower stalled; reopening it");
      this.#closeCursor();
    } else {
      yield* this.#heartbeatIfDue(now);
    }
    return "continue";
  }

  /** Delivers the events of a message read from the log that come next, skipping older ones. */
  async *#deliverMessage(sub: Subscription<T>, m: JsMsg): AsyncGenerator<FollowItem<T>, Turn> {
    const events = sub.decode(m);
    const first = events[0];
    if (first) sub.marks.add(first.sequence, m.seq);
    for (const e of events) {
      if (e.sequence <= this.#delivered) continue;
      if (e.sequence > this.#delivered + 1) {
        throw new FollowGapError(sub.subject, this.#delivered + 1, e.sequence);
      }
      if ((yield* this.#deliver(e)) === "end" || this.#aborted) return "end";
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

  /** Nothing to deliver yet: waits for the subscription (its anchor or the next event) or a deadline. */
  async *#awaitChange(sub: Subscription<T>): AsyncGenerator<FollowItem<T>, Turn> {
    const { heartbeatMs, idleMs } = this.#timing;
    const deadline = Math.min(this.#lastYield + heartbeatMs, this.#lastEvent + idleMs);
    let now = Date.now();
    if (deadline > now) {
      this.#armTimer(deadline);
      await new Promise<void>((resolve) => {
        this.#resume = resolve;
        sub.wait(this);
      });
      if (this.#aborted) return "end";
      now = Date.now();
      if (now < deadline) return "continue";
    }
    this.#checkIdle(now);
    yield* this.#heartbeatIfDue(now);
    return "continue";
  }

  /**
   * Makes sure a timer fires by `at`. A pending timer that fires earlier is
   * kept: when it fires it wakes the follower, which finds its deadline not
   * yet due and waits again, arming the timer anew. So a follower receiving
   * events sets about one timer per heartbeat period, not one per event.
   */
  #armTimer(at: number): void {
    if (this.#timer !== undefined && this.#timerAt <= at) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    if (!Number.isFinite(at)) {
      this.#timer = undefined;
      return;
    }
    this.#timerAt = at;
    this.#timer = setTimeout(this.#onTimer, Math.max(0, at - Date.now()));
  }

  readonly #onTimer = () => {
    this.#timer = undefined;
    this.wake();
  };

  #checkIdle(now: number): void {
    const { idleMs } = this.#timing;
    if (now >= this.#lastEvent + idleMs) throw new FollowTimeoutError(this.#sub?.subject ?? "", idleMs);
  }

  async *#heartbeatIfDue(now: number): AsyncGenerator<FollowItem<T>, void> {
    if (now < this.#lastYield + this.#timing.heartbeatMs) return;
    this.#lastYield = now;
    yield { kind: "heartbeat" };
  }

  #closeCursor(): void {
    this.#cursor?.close();
    this.#cursor = undefined;
    if (this.#holdsSlot) {
      this.#holdsSlot = false;
      this.#sub?.slots.release();
    }
  }

  /** The shared catch-up read to take `want` from, joining it; throws when the log lost `want`. */
  #backfillFor(sub: Subscription<T>, want: number): Backfill<T> | undefined {
    let b = this.#backfill;
    if (b === undefined) {
      // One that ran dry (stopped, or full) is not replaced for this catch-up: the follower reads alone.
      if (this.#backfillDone) return undefined;
      b = sub.backfillFor(want);
      if (!b) return undefined;
      b.readers++;
      this.#backfill = b;
    }
    if (b.fromStart && b.first > 0 && want < b.first) throw new FollowGapError(sub.subject, want, b.first);
    if (b.gap && want >= b.gap.missingFrom && want < b.gap.found)
      throw new FollowGapError(sub.subject, want, b.gap.found);
    if (!b.serves(want)) {
      this.#leaveBackfill(sub);
      this.#backfillDone = true;
      return undefined;
    }
    return b;
  }

  #leaveBackfill(sub: Subscription<T>): void {
    if (this.#backfill === undefined) return;
    sub.leaveBackfill(this.#backfill);
    this.#backfill = undefined;
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
