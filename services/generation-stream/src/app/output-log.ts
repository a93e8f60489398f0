import { ConcurrencyError, type EventStore } from "@spool/kit";
import type { GenerationRequested } from "@spool/proto/spool/generation/v1/events.js";
import type {
  GenerationEvent,
  ToolCallRequested,
  Usage,
} from "@spool/proto/spool/generation/v1/generation.js";
import { RunningTextDigest } from "@spool/transcript";
import { OutputEvent, Subjects } from "../domain/events.js";
import { FollowGapError } from "../follow/index.js";

export type EventBody = NonNullable<GenerationEvent["event"]>;
export type TerminalEvent = Extract<EventBody, { $case: "completed" | "failed" | "cancelled" }>;

/** Where a generation's output subject stands, and what it says so far. */
export interface OutputPosition {
  /** JetStream sequence of the subject's last message (0 = empty): the optimistic-concurrency token. */
  streamSeq: number;
  /** Per-generation sequence of the last event (0 = none). */
  sequence: number;
  /** The terminal event, once written: nothing follows it, and the lifecycle's outcome is read from it. */
  terminal: TerminalEvent | undefined;
  /** Epoch of the last `started` event (0 = none yet). */
  epoch: number;
  /** Whether any delta or tool call was written (a lost producer then fails the generation rather than re-queue it). */
  producedOutput: boolean;
  text: string;
  toolCalls: ToolCallRequested[];
  /** The last usage reported. */
  usage: Usage;
  /** OutputDelta events so far, and the running SHA-256 of their text: the terminal event's TranscriptDigest. */
  outputEvents: number;
  textDigest: RunningTextDigest;
}

export const EMPTY_POSITION: OutputPosition = {
  streamSeq: 0,
  sequence: 0,
  terminal: undefined,
  epoch: 0,
  producedOutput: false,
  text: "",
  toolCalls: [],
  usage: { promptTokens: 0n, completionTokens: 0n },
  outputEvents: 0,
  textDigest: RunningTextDigest.empty(),
};

export function isTerminal(e: GenerationEvent["event"]): e is TerminalEvent {
  return e?.$case === "completed" || e?.$case === "failed" || e?.$case === "cancelled";
}

/** The position after `event` was stored at `streamSeq` with per-generation `sequence`. */
function advance(at: OutputPosition, event: EventBody | undefined, streamSeq: number, sequence: number) {
  const next: OutputPosition = { ...at, streamSeq, sequence };
  if (isTerminal(event)) next.terminal ??= event;
  if (event?.$case === "started") next.epoch = Number(event.value.epoch);
  if (event?.$case === "delta") {
    next.producedOutput = true;
    next.text = at.text + event.value.text;
    next.outputEvents = at.outputEvents + 1;
    next.textDigest = at.textDigest.with(event.value.text);
  }
  if (event?.$case === "toolCall") {
    next.producedOutput = true;
    next.toolCalls = [...at.toolCalls, event.value];
  }
  if (event?.$case === "usage" && event.value.usage) next.usage = event.value.usage;
  return next;
}

/**
 * The followable log of a generation: subject gen.output.<id> in GEN_OUTPUT.
 * Every append names the subject's last stream sequence it expects, so there
 * is one order, and a writer that is not the current one is refused: once a
 * terminal event is written, every other writer's next append conflicts.
 */
export class OutputLog {
  readonly #store: EventStore;

  constructor(store: EventStore) {
    this.#store = store;
  }

  async position(generationId: string): Promise<OutputPosition> {
    let pos = EMPTY_POSITION;
    for await (const events of this.#store.readSubject(Subjects.output(generationId))) {
      for (const e of events) {
        const decoded = OutputEvent.decode(e.data);
        pos = advance(pos, decoded.event, e.streamSequence, Number(decoded.sequence));
      }
    }
    return pos;
  }

  /**
   * The position from the subject's first event, which must be sequence 1:
   * for a snapshot, which stands for everything from the start. Throws
   * FollowGapError when the retention removed the start (or a gap is found).
   */
  async positionFromStart(generationId: string): Promise<OutputPosition> {
    const subject = Subjects.output(generationId);
    let pos = EMPTY_POSITION;
    for await (const events of this.#store.readSubject(subject)) {
      for (const e of events) {
        const decoded = OutputEvent.decode(e.data);
        const sequence = Number(decoded.sequence);
        if (sequence !== pos.sequence + 1) throw new FollowGapError(subject, pos.sequence + 1, sequence);
        pos = advance(pos, decoded.event, e.streamSequence, sequence);
      }
    }
    return pos;
  }

  /** The per-generation sequence of the subject's first stored event; undefined when none is stored. */
  async earliestSequence(generationId: string): Promise<number | undefined> {
    for await (const events of this.#store.readSubject(Subjects.output(generationId))) {
      const first = events[0];
      if (first) return Number(OutputEvent.decode(first.data).sequence);
    }
    return undefined;
  }

  /** Whether the output already ends with its terminal event (reads only the last message). */
  async hasEnded(generationId: string): Promise<boolean> {
    const last = await this.#store.readLast(Subjects.output(generationId));
    return last.some((e) => isTerminal(OutputEvent.decode(e.data).event));
  }

  /**
   * Appends the next event after `at`; returns the new position. A stale `at`
   * (someone else appended) throws ConcurrencyError. `messageId` makes a
   * retried append land once; it must name this writer and this position
   * (a duplicate is taken as this very event stored right after `at`).
   */
  async append(
    generationId: string,
    at: OutputPosition,
    event: EventBody,
    messageId?: string,
  ): Promise<OutputPosition> {
    const sequence = at.sequence + 1;
    // Every terminal event is written here, by whichever writer ends the generation (its producer,
    // built-in or external, a cancel, the sweeper): here it gets the proof of what came before it.
    const transcript = isTerminal(event)
      ? {
          lastSequence: BigInt(sequence),
          outputEvents: BigInt(at.outputEvents),
          textSha256: at.textDigest.digest(),
        }
      : undefined;
    const result = await this.#store.append(
      Subjects.output(generationId),
      [
        OutputEvent.create({
          generationId,
          sequence: BigInt(sequence),
          timeMs: BigInt(Date.now()),
          event,
          transcript,
        }),
      ],
      { expectedSequence: at.streamSeq, ...(messageId ? { messageId } : {}) },
    );
    return advance(at, event, result.sequence, sequence);
  }

  /**
   * Writes `created` if the output is still empty. Whoever may write a
   * generation's first output event (the start, a producer claiming it, a
   * cancel) calls this first, so every output starts with `created` whatever
   * the order they run in. The message id is shared: identical content, and
   * only ever at sequence 1.
   */
  async ensureCreated(
    generationId: string,
    request: Pick<GenerationRequested, "model" | "conversationId">,
  ): Promise<void> {
    if ((await this.#store.lastSequence(Subjects.output(generationId))) !== 0) return;
    try {
      await this.append(
        generationId,
        EMPTY_POSITION,
        { $case: "created", value: { model: request.model, conversationId: request.conversationId } },
        `created:${generationId}`,
      );
    } catch (e) {
      // Someone wrote first, and wrote `created` first (every first writer comes through here).
      if (!(e instanceof ConcurrencyError)) throw e;
    }
  }
}
