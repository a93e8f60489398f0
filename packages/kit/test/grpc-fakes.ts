// Stand-ins for projections and reactors, for the admin service and health tests.
import type { DeadLetter, DeadLetterStore } from "../src/dead-letters.js";
import { FailedPreconditionError } from "../src/errors.js";
import type { ConsumerStatus, ManagedConsumer } from "../src/managed.js";

export interface FakeConsumerOptions {
  name: string;
  status?: Partial<ConsumerStatus>;
  /** Gives the consumer a read model (a projection); reactors have none. */
  rebuildable?: boolean;
  /** Where replay marks entries replayed, the way Reactor does. */
  deadLetters?: DeadLetterStore;
  /** How long status() takes (a slow call for shutdown tests). */
  statusDelayMs?: number;
}

export class FakeConsumer implements ManagedConsumer {
  readonly name: string;
  isHealthy = true;
  /** When set, replay throws it. */
  replayError: Error | undefined;
  readonly replayed: string[] = [];
  stopped = false;
  #rebuilding: number | undefined;
  readonly #o: FakeConsumerOptions;
  readonly rebuild?: () => Promise<{ targetVersion: number }>;

  constructor(options: FakeConsumerOptions) {
    this.name = options.name;
    this.#o = options;
    if (options.rebuildable) {
      this.rebuild = async () => {
        if (this.#rebuilding !== undefined) {
          throw new FailedPreconditionError(`${this.name} is already rebuilding into v${this.#rebuilding}`);
        }
        this.#rebuilding = (options.status?.version ?? 1) + 1;
        return { targetVersion: this.#rebuilding };
      };
    }
  }

  healthy(): boolean {
    return this.isHealthy;
  }

  async status(): Promise<ConsumerStatus> {
    if (this.#o.statusDelayMs) await new Promise((r) => setTimeout(r, this.#o.statusDelayMs));
    return {
      name: this.name,
      stream: "TEST_EX",
      state: this.#rebuilding !== undefined ? "rebuilding" : "running",
      checkpoint: 10,
      head: 12,
      lag: 2,
      version: 1,
      strict: false,
      deadLetters: 0,
      lastError: undefined,
      rebuild: undefined,
      ...this.#o.status,
    };
  }

  async replay(entry: DeadLetter): Promise<void> {
    // Yield so parallel replays really overlap.
    await new Promise((r) => setTimeout(r, 20));
    if (this.replayError) throw this.replayError;
    this.replayed.push(entry.id);
    if (this.#o.deadLetters && !(await this.#o.deadLetters.markReplayed(entry.id))) {
      throw new Error(`dead letter ${entry.id} was already replayed`);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
  }
}
