import { aggregate, ConcurrencyError, type EventStore } from "@spool/kit";
import type { GenerationRequested } from "@spool/proto/spool/generation/v1/events.js";
import { FailureReason, GenerationStatus, type Usage } from "@spool/proto/spool/generation/v1/generation.js";
import { Subjects } from "../domain/events.js";
import { decideCancel, decideSettle, GenerationAggregate, type Outcome } from "../domain/generation.js";
import type { UserLimits } from "../limits/user-limits.js";
import type { OutputLog, OutputPosition, TerminalEvent } from "./output-log.js";

/*
 * Finishing a generation, one protocol for every writer (its producer, a
 * cancel of a queued generation, the lease sweeper):
 *
 * 1. The terminal event goes to the OUTPUT first, conditional on the output
 *    position the writer holds. That append is the decision: once it is
 *    stored, every other writer's next append conflicts.
 * 2. A writer whose terminal append conflicts reads the output again. A
 *    terminal already there is adopted (someone else decided); otherwise a
 *    producer has lost its lease (StaleLeaseError), and a sweeper or canceller
 *    places its terminal after what slipped in.
 * 3. The lifecycle's GenerationFinished is then copied from the output:
 *    status, reason and usage from the terminal event, text and tool calls
 *    from the output, last_sequence = where the terminal landed. Anyone who
 *    finds an output terminal without a lifecycle finish completes it.
 *
 * So every output ends with exactly one terminal event, and the lifecycle's
 * lastSequence is its sequence, under every interleaving.
 */

const ZERO: Usage = { promptTokens: 0n, completionTokens: 0n };

/** The terminal output event for an outcome. */
export function terminalEvent(
  status: Outcome["status"],
  usage: Usage,
  failure: { reason: FailureReason; message: string } = {
    reason: FailureReason.FAILURE_REASON_UNSPECIFIED,
    message: "",
  },
): TerminalEvent {
  if (status === GenerationStatus.GENERATION_STATUS_COMPLETED)
    return { $case: "completed", value: { usage } };
  if (status === GenerationStatus.GENERATION_STATUS_CANCELLED)
    return { $case: "cancelled", value: { usage } };
  return { $case: "failed", value: { reason: failure.reason, message: failure.message, usage } };
}

/** The lifecycle outcome an output with a terminal event says. */
export function outcomeOf(at: OutputPosition & { terminal: TerminalEvent }): Outcome {
  const t = at.terminal;
  const status =
    t.$case === "completed"
      ? GenerationStatus.GENERATION_STATUS_COMPLETED
      : t.$case === "cancelled"
        ? GenerationStatus.GENERATION_STATUS_CANCELLED
        : GenerationStatus.GENERATION_STATUS_FAILED;
  return {
    status,
    failureReason: t.$case === "failed" ? t.value.reason : FailureReason.FAILURE_REASON_UNSPECIFIED,
    failureMessage: t.$case === "failed" ? t.value.message : "",
    text: at.text,
    usage: t.value.usage ?? ZERO,
    toolCalls: at.toolCalls,
    // The terminal is the output's last event: nothing can be appended after it.
    lastSequence: at.sequence,
  };
}

/**
 * Step 3: the lifecycle follows the output's terminal (once; a no-op if it
 * already has). `cancelledBy` records the cancel request with it, when a
 * cancel is what ended the generation.
 */
export async function completeLifecycle(
  store: EventStore,
  generationId: string,
  at: OutputPosition & { terminal: TerminalEvent },
  actor: string,
  cancelledBy?: string,
): Promise<void> {
  const outcome = outcomeOf(at);
  await aggregate(store, GenerationAggregate).handle(
    generationId,
    (state) => {
      const events = decideSettle(state, outcome);
      return events.length > 0 && cancelledBy ? [...decideCancel(state, cancelledBy), ...events] : events;
    },
    { actor },
  );
}

/**
 * The one way a generation frees its owner's active-generation slot. Whoever
 * finished it (its producer, a cancel while queued, the lease sweeper) calls
 * this right after the lifecycle finish, so the user can start the next one
 * at once; the slot releaser reactor calls it for every GenerationFinished,
 * which covers external producers and a writer that died in between. A start
 * whose request was never written gives its reservation back through it too.
 * Idempotent: releasing twice is harmless.
 */
export async function releaseSlot(
  limits: Pick<UserLimits, "release">,
  ownerId: string,
  generationId: string,
): Promise<void> {
  await limits.release(ownerId, generationId);
}

export function hasTerminal(at: OutputPosition): at is OutputPosition & { terminal: TerminalEvent } {
  return at.terminal !== undefined;
}

/** Conflicts one settle may meet in a row (each one a stale producer's in-flight append); then it gives up until next time. */
const MAX_SETTLE_ROUNDS = 20;

/**
 * Ends a generation that no live producer holds (its lease lapsed, or it is
 * cancelled while queued): places `terminal(at)` after whatever the output
 * holds — `created` first if it is still empty — or adopts a terminal already
 * there, then completes the lifecycle from the output. Returns the output as
 * it ended.
 */
export async function settleThroughOutput(
  deps: { store: EventStore; output: OutputLog },
  generationId: string,
  request: Pick<GenerationRequested, "model" | "conversationId">,
  terminal: (at: OutputPosition) => TerminalEvent,
  writer: { name: string; actor: string; cancelledBy?: string },
): Promise<OutputPosition & { terminal: TerminalEvent }> {
  let at = await deps.output.position(generationId);
  for (let round = 0; !hasTerminal(at); round++) {
    if (round >= MAX_SETTLE_ROUNDS) throw new ConcurrencyError(Subjects.output(generationId), at.streamSeq);
    if (at.sequence === 0) {
      await deps.output.ensureCreated(generationId, request);
      at = await deps.output.position(generationId);
      continue;
    }
    const event = terminal(at);
    try {
      // The id names writer, position and kind: a duplicate is this very terminal, stored by an earlier try.
      at = await deps.output.append(
        generationId,
        at,
        event,
        `${writer.name}:${generationId}:${at.sequence + 1}:${event.$case}`,
      );
    } catch (e) {
      if (!(e instanceof ConcurrencyError)) throw e;
      // A stale producer's in-flight append, or another settler's terminal: look again.
      at = await deps.output.position(generationId);
    }
  }
  await completeLifecycle(deps.store, generationId, at, writer.actor, writer.cancelledBy);
  return at;
}
