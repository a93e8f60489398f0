/**
 * Coalesces output deltas so the event rate stays bounded whatever the
 * model's token rate: text is held for at most `windowMs` after the first
 * piece arrives, or until `maxChars` accumulate, then emitted as one delta.
 */
export interface CoalescerOptions {
  windowMs: number;
  maxChars: number;
  emit: (text: string) => Promise<void>;
  /** Injectable for tests. */
  setTimer?: (fn: () => void, ms: number) => () => void;
}

export class Coalescer {
  readonly #o: CoalescerOptions;
  #buffer = "";
  #cancelTimer: (() => void) | undefined;
  /** Emissions are chained, so deltas leave in order even when emit is slow. */
  #chain: Promise<void> = Promise.resolve();
  #error: unknown;

  constructor(options: CoalescerOptions) {
    this.#o = options;
  }

  /** Adds text; rejects if an earlier emission failed (e.g. the lease was lost). */
  async push(text: string): Promise<void> {
    if (this.#error) throw this.#error;
    if (text.length === 0) return;
    this.#buffer += text;
    if (this.#buffer.length >= this.#o.maxChars) {
      await this.flush();
    } else if (!this.#cancelTimer) {
      const set = this.#o.setTimer ?? defaultTimer;
      this.#cancelTimer = set(() => {
        this.#cancelTimer = undefined;
        void this.flush().catch(() => {});
      }, this.#o.windowMs);
    }
  }

  /** Emits whatever is held; resolves once everything pushed so far has been emitted. */
  flush(): Promise<void> {
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    const text = this.#buffer;
    this.#buffer = "";
    if (text.length > 0) {
      this.#chain = this.#chain.then(() =>
        this.#o.emit(text).catch((e: unknown) => {
          this.#error = e;
          throw e;
        }),
      );
    }
    return this.#chain;
  }

  /** Drops held text without emitting (the generation ended another way). */
  discard(): void {
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    this.#buffer = "";
  }
}

function defaultTimer(fn: () => void, ms: number): () => void {
  const t = setTimeout(fn, ms);
  return () => clearTimeout(t);
}
