import type { EventStore } from "@spool/kit";
import type { GenerationEvent } from "@spool/proto/spool/generation/v1/generation.js";
import { OutputEvent, Subjects } from "../domain/events.js";

/** Where a generation's output subject stands. */
export interface OutputPosition {
  /** JetStream sequence of the subject's last message (0 = empty): the optimistic-concurrency token. */
  streamSeq: number;
  /** Per-generation sequence of the last event (0 = none). */
  sequence: number;
  terminal: boolean;
  /** Whether any delta or tool call was written (a lost producer then fails the generation rather than re-queue it). */
  producedOutput: boolean;
  text: string;
}

type EventBody = NonNullable<GenerationEvent["event"]>;

export function isTerminal(e: GenerationEvent["event"]): boolean {
  return e?.$case === "completed" || e?.$case === "failed" || e?.$case === "cancelled";
}

/**
 * The followable log of a generation: subject gen.output.<id> in GEN_OUTPUT.
 * Every append names the subject's last stream sequence it expects, so there
 * is one order, and a writer that is not the current one is refused.
 */
export class OutputLog {
  readonly #store: EventStore;

  constructor(store: EventStore) {
    this.#store = store;
  }

  async position(generationId: string): Promise<OutputPosition> {
    const pos: OutputPosition = {
      streamSeq: 0,
      sequence: 0,
      terminal: false,
      producedOutput: false,
      text: "",
    };
    for await (const events of this.#store.readSubject(Subjects.output(generationId))) {
      for (const e of events) {
        const decoded = OutputEvent.decode(e.data);
        pos.streamSeq = e.streamSequence;
        pos.sequence = Number(decoded.sequence);
        if (isTerminal(decoded.event)) pos.terminal = true;
        if (decoded.event?.$case === "delta") {
          pos.producedOutput = true;
          pos.text += decoded.event.value.text;
        }
        if (decoded.event?.$case === "toolCall") pos.producedOutput = true;
      }
    }
    return pos;
  }

  /**
   * Appends the next event after `at`; returns the new position. A stale `at`
   * (someone else appended) throws ConcurrencyError. `messageId` makes a
   * retried append land once.
   */
  async append(
    generationId: string,
    at: OutputPosition,
    event: EventBody,
    messageId?: string,
  ): Promise<OutputPosition> {
    const sequence = at.sequence + 1;
    const result = await this.#store.append(
      Subjects.output(generationId),
      [OutputEvent.create({ generationId, sequence: BigInt(sequence), timeMs: BigInt(Date.now()), event })],
      { expectedSequence: at.streamSeq, ...(messageId ? { messageId } : {}) },
    );
    return {
      streamSeq: result.sequence,
      sequence,
      terminal: at.terminal || isTerminal(event),
      producedOutput: at.producedOutput || event.$case === "delta" || event.$case === "toolCall",
      text: at.text + (event.$case === "delta" ? event.value.text : ""),
    };
  }
}
