import { setTimeout as sleep } from "node:timers/promises";
import { SpoolError, UnavailableError } from "../errors.js";
import type { EventStore } from "../event-store.js";

/**
 * Serialises async sections: the live lane's batches and a rebuild's final
 * tail-and-swap, so the swap sees a live checkpoint no batch is moving.
 */
export class Mutex {
  #tail: Promise<unknown> = Promise.resolve();

  run<R>(section: () => Promise<R>): Promise<R> {
    const result = this.#tail.then(section);
    this.#tail = result.catch(() => {});
    return result;
  }
}

/**
 * The last stream sequence a projection can see: the stream's last sequence,
 * or, with a subject filter, the last sequence on a matching subject (so a
 * caught-up filtered projection shows no lag).
 */
export async function readHead(
  store: EventStore,
  stream: string,
  filter: string | undefined,
): Promise<number> {
  const jsm = await store.manager();
  if (!filter) return (await jsm.streams.info(stream)).state.last_seq;
  const last = await jsm.streams.getMessage(stream, { last_by_subj: filter });
  return last?.seq ?? 0;
}

interface WaitersOptions {
  projection: string;
  checkpoint: () => Promise<number>;
  head: () => Promise<number>;
  pollMs?: number;
}

interface Waiter {
  sequence: number;
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * Read-your-writes: callers wait until the checkpoint reaches a sequence. One
 * poll loop per projector serves every waiter, so a burst of queries costs one
 * checkpoint read per interval rather than one each; the writer process is
 * woken at once after each commit.
 */
export class CheckpointWaiters {
  readonly #o: WaitersOptions;
  readonly #waiters = new Set<Waiter>();
  #polling = false;
  #wake = Promise.withResolvers<void>();

  constructor(options: WaitersOptions) {
    this.#o = options;
  }

  wait(sequence: number, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        sequence,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.delete(waiter);
          reject(
            new SpoolError(
              "DEADLINE_EXCEEDED",
              `projection ${this.#o.projection} did not reach sequence ${sequence} within ${timeoutMs} ms`,
            ),
          );
        }, timeoutMs),
      };
      this.#waiters.add(waiter);
      void this.#poll();
    });
  }

  /** A batch committed in this process. */
  poke(): void {
    if (this.#waiters.size === 0) return;
    this.#wake.resolve();
    this.#wake = Promise.withResolvers<void>();
  }

  close(): void {
    this.#settle(() => true, new UnavailableError(`projection ${this.#o.projection} stopped`));
  }

  async #poll(): Promise<void> {
    if (this.#polling) return;
    this.#polling = true;
    let headCheckedAt = 0;
    try {
      while (this.#waiters.size > 0) {
        try {
          const checkpoint = await this.#o.checkpoint();
          this.#settle((w) => w.sequence <= checkpoint);
          if (this.#waiters.size > 0 && Date.now() - headCheckedAt >= 250) {
            headCheckedAt = Date.now();
            // Head first, checkpoint second: if the projection has applied
            // everything it can see, a sequence written before the wait began
            // that it has not applied is not on its subjects.
            const head = await this.#o.head();
            if (head <= (await this.#o.checkpoint())) this.#settle(() => true);
          }
        } catch {
          // The store is unreachable; the waiters' deadlines still run.
        }
        await Promise.race([sleep(this.#o.pollMs ?? 25), this.#wake.promise]);
      }
    } finally {
      this.#polling = false;
    }
  }

  #settle(done: (w: Waiter) => boolean, error?: Error): void {
    for (const w of this.#waiters) {
      if (!done(w)) continue;
      this.#waiters.delete(w);
      clearTimeout(w.timer);
      if (error) w.reject(error);
      else w.resolve();
    }
  }
}
