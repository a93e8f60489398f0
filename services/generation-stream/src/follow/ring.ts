/** One event held in memory: its per-subject sequence and the stream message that carried it. */
export interface RingEntry<T> {
  sequence: number;
  terminal: boolean;
  payload: T;
  /** JetStream stream sequence of the message holding the event. */
  streamSequence: number;
  /** Bytes charged to the entry (the message size for its first event, 0 for the others). */
  bytes: number;
}

export interface RingLimits {
  /** Most events held. */
  maxEvents: number;
  /** Most bytes held (the newest event is kept even when it alone is larger). */
  maxBytes: number;
}

/**
 * The recent tail of one subject: a contiguous run of events by sequence,
 * [first, next), shared by every follower of the subject. Followers are
 * cursors into it, so one event costs memory once whatever the number of
 * followers; the oldest events are evicted by count and bytes, and a follower
 * whose cursor falls below `first` reads the log instead.
 */
export class Ring<T> {
  readonly #limits: RingLimits;
  #items: (RingEntry<T> | undefined)[] = [];
  #head = 0;
  #first = 1;
  #bytes = 0;

  constructor(limits: RingLimits) {
    if (limits.maxEvents < 1) throw new Error("ring needs room for at least one event");
    this.#limits = limits;
  }

  /** Sequence of the oldest event held (equals `next` when empty). */
  get first(): number {
    return this.#first;
  }

  /** Sequence the next pushed event must carry to extend the run. */
  get next(): number {
    return this.#first + this.size;
  }

  get size(): number {
    return this.#items.length - this.#head;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** The event with this sequence, when held. */
  get(sequence: number): RingEntry<T> | undefined {
    const i = sequence - this.#first;
    if (i < 0 || i >= this.size) return undefined;
    return this.#items[this.#head + i];
  }

  /** Empties the ring; the next event expected is `first`. */
  reset(first: number): void {
    this.#items = [];
    this.#head = 0;
    this.#first = first;
    this.#bytes = 0;
  }

  /**
   * Adds an event. One below `next` is a duplicate and ignored (returns false);
   * one above `next` breaks the run, so the ring restarts at it: whoever needs
   * the missing events reads them from the log.
   */
  push(entry: RingEntry<T>): boolean {
    if (entry.sequence < this.next) return false;
    if (entry.sequence > this.next) this.reset(entry.sequence);
    this.#items.push(entry);
    this.#bytes += entry.bytes;
    while (this.size > this.#limits.maxEvents || (this.#bytes > this.#limits.maxBytes && this.size > 1)) {
      this.#evictOldest();
    }
    return true;
  }

  #evictOldest(): void {
    const old = this.#items[this.#head];
    this.#items[this.#head] = undefined;
    this.#head++;
    this.#first++;
    this.#bytes -= old?.bytes ?? 0;
    // Compact now and then so the array does not grow with the total ever pushed.
    if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
  }
}

/**
 * A sparse index from event sequence to the stream sequence of the message
 * holding it, so a read from the log can start near a sequence instead of at
 * the subject's first message. Bounded: past the limit every other mark is
 * dropped, which keeps coverage at a coarser grain.
 */
export class Marks {
  readonly #limit: number;
  #events: number[] = [];
  #streams: number[] = [];

  constructor(limit = 1024) {
    this.#limit = Math.max(2, limit);
  }

  get size(): number {
    return this.#events.length;
  }

  /** Records that event `sequence` is in the message at stream sequence `streamSequence`. */
  add(sequence: number, streamSequence: number): void {
    const n = this.#events.length;
    const last = this.#events[n - 1];
    if (last === undefined || sequence > last) {
      this.#events.push(sequence);
      this.#streams.push(streamSequence);
    } else {
      const i = this.#upperBound(sequence);
      if (i > 0 && this.#events[i - 1] === sequence) return;
      this.#events.splice(i, 0, sequence);
      this.#streams.splice(i, 0, streamSequence);
    }
    if (this.#events.length > this.#limit) {
      this.#events = this.#events.filter((_, i) => i % 2 === 0);
      this.#streams = this.#streams.filter((_, i) => i % 2 === 0);
    }
  }

  /**
   * Stream sequence of a message holding an event at or below `sequence` (the
   * closest known), or 0 when none is known: reading the subject from there
   * reaches `sequence` without skipping it.
   */
  floor(sequence: number): number {
    const i = this.#upperBound(sequence);
    return i > 0 ? (this.#streams[i - 1] ?? 0) : 0;
  }

  /** Index of the first mark with an event sequence above `sequence`. */
  #upperBound(sequence: number): number {
    let lo = 0;
    let hi = this.#events.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.#events[mid] ?? 0) <= sequence) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
