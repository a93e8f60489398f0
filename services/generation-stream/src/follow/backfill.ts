import type { RingEntry } from "./ring.js";
import type { Waiter } from "./subscription.js";

/** Why a backfill stopped reading (see Backfill.state). */
export type BackfillState =
  /** Still reading the log. */
  | "reading"
  /** Reached the ring: everything from `first` on is in memory between the two. */
  | "joined"
  /** Hit its byte budget: followers past `next` read the log on their own. */
  | "full"
  /** The read failed (consumer lost, undecodable message) or its readers left. */
  | "stopped";

/**
 * One shared read of a subject's log, for every follower of it in this
 * process that is behind the ring (a replica that just started, clients
 * resuming at once): the events from where the read started up to the ring,
 * held in order while anyone reads them. So N followers catching up on one
 * generation cost one JetStream consumer, not N (docs/BENCHMARKS.md,
 * "bounded catch-up").
 */
export class Backfill<T> {
  /** Consecutive events from `first`. */
  readonly entries: RingEntry<T>[] = [];
  /** Sequence of entries[0]; 0 until the first message arrives. */
  first = 0;
  bytes = 0;
  /** Followers reading from it: the read stops and is dropped when the last one leaves. */
  readers = 0;
  state: BackfillState = "reading";
  /** The log skips from `missingFrom` to `found` (retention removed events). */
  gap: { missingFrom: number; found: number } | undefined;
  /** True when the read started at the subject's first stored message (nothing older exists). */
  readonly fromStart: boolean;
  /** Ends the read (its last reader left, or the subscription closed). */
  readonly stop = new AbortController();

  constructor(fromStart: boolean) {
    this.fromStart = fromStart;
  }

  get next(): number {
    return this.first + this.entries.length;
  }

  get(sequence: number): RingEntry<T> | undefined {
    if (this.first === 0) return undefined;
    return this.entries[sequence - this.first];
  }

  /** Whether a follower wanting `want` next can get it here (now or once read). */
  serves(want: number): boolean {
    if (this.first === 0) return this.state === "reading";
    if (want < this.first) return false;
    return want < this.next || this.state === "reading";
  }

  /** Adds an event read from the log; false when it does not follow the last one (a gap). */
  push(entry: RingEntry<T>): boolean {
    if (this.first === 0) this.first = entry.sequence;
    else if (entry.sequence < this.next) return true;
    else if (entry.sequence > this.next) {
      this.gap = { missingFrom: this.next, found: entry.sequence };
      return false;
    }
    this.entries.push(entry);
    this.bytes += entry.bytes;
    return true;
  }
}

/**
 * The hub's cap on followers reading the log on their own (a LogCursor each,
 * one JetStream consumer each) at once; the rest wait for a slot.
 */
export class CatchUpSlots {
  readonly #max: number;
  #used = 0;
  readonly #queue = new Set<Waiter>();
  /** Followers that had to wait for a slot (stats). */
  waited = 0;

  constructor(max: number) {
    this.#max = max;
  }

  get used(): number {
    return this.#used;
  }

  /** Takes a slot when one is free; otherwise queues the waiter, woken when one frees. */
  tryAcquire(waiter: Waiter): boolean {
    if (this.#used < this.#max && this.#queue.size === 0) {
      this.#used++;
      return true;
    }
    if (!this.#queue.has(waiter)) this.waited++;
    this.#queue.add(waiter);
    return false;
  }

  /** The first queued waiter takes the freed slot at its next try (it is woken, first in line). */
  release(): void {
    this.#used--;
    const first = this.#queue.values().next();
    if (!first.done) {
      this.#queue.delete(first.value);
      this.#used++;
      first.value.wake();
      this.#granted.add(first.value);
    }
  }

  /** A waiter woken by release() already holds a slot. */
  readonly #granted = new Set<Waiter>();

  /** Whether `waiter` was handed a slot by release(); consumes the grant. */
  takeGrant(waiter: Waiter): boolean {
    return this.#granted.delete(waiter);
  }

  /** Forgets a waiter that stopped waiting (its follow ended); gives back a slot granted meanwhile. */
  forget(waiter: Waiter): void {
    this.#queue.delete(waiter);
    if (this.#granted.delete(waiter)) this.release();
  }
}
