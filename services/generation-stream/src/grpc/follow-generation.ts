import {
  type CallContext,
  credentialSignal,
  type GrpcFrame,
  OutOfRangeError,
  principalOf,
  type RevocationSource,
  UnavailableError,
} from "@spool/kit";
import {
  type FollowGenerationRequest,
  type FollowGenerationResponse,
  GenerationServiceService,
  OutputExpired,
} from "@spool/proto/spool/generation/v1/generation.js";
import type { Generations } from "../app/generations.js";
import { isTerminal, type OutputLog } from "../app/output-log.js";
import type { Existing } from "../domain/generation.js";
import { type FollowEvent, FollowGapError } from "../follow/index.js";
import type { FollowSource, PreEncoded, SharedEvent } from "./generation-service.js";

/** Where a client gets the final transcript once the output has expired (OutputExpired.transcript_method). */
export const TRANSCRIPT_METHOD = GenerationServiceService.getGeneration.path.replace(/^\//, "");
const OUTPUT_EXPIRED_TYPE = "type.googleapis.com/spool.generation.v1.OutputExpired";

export interface FollowDeps {
  generations: Pick<Generations, "visible">;
  output: Pick<OutputLog, "earliestSequence" | "positionFromStart">;
  follow: FollowSource;
  /** The revocation set: a follow ends when its caller's credentials are withdrawn. */
  revocations: RevocationSource;
  /** GEN_OUTPUT's retention (SPOOL_GEN_OUTPUT_RETENTION_SECONDS), named in OutputExpired. */
  retentionSeconds: number;
}

type Send = (message: FollowGenerationResponse | PreEncoded) => Promise<void>;

/**
 * FollowGeneration, with the guarantees of docs/API.md ("Following a
 * generation"): access checked on every call, the stream ended when the
 * caller's credentials are revoked or expire, OUT_OF_RANGE with a typed
 * detail instead of a partial stream, and an optional snapshot start.
 * The fan-out itself is the follow hub's (src/follow).
 */
export function followGenerationHandler(d: FollowDeps) {
  return async (
    req: FollowGenerationRequest,
    ctx: CallContext & { send: Send; trySendFramed(message: PreEncoded, frame: GrpcFrame): boolean },
  ): Promise<void> => {
    const caller = principalOf(ctx);
    const id = req.generationId;
    const after = Number(req.afterSequence); // in range: generationRules
    // Access first, on every follow and resume: another organisation's (or a colleague's, for a
    // member) generation is NOT_FOUND like an unknown id, before anything else is said about it.
    const generation = await d.generations.visible(caller, id);
    const credentials = credentialSignal(caller, d.revocations);
    try {
      const send = sendUntil(ctx.send, credentials.signal);
      // A finished generation the caller has to its end: nothing to send, whatever the log still holds.
      const last = generation.outcome?.lastSequence ?? 0;
      if (generation.kind === "finished" && last > 0 && after >= last) return;
      let from = after;
      if (req.fromSnapshot) from = await sendSnapshot(d, generation, after, send);
      else if (generation.kind === "finished") await checkRetained(d, generation, after);
      // Shutdown ends follows at once (the grace period is for short calls); the client
      // resumes on another replica from the last sequence it saw.
      const signal = AbortSignal.any([ctx.signal, ctx.stopping, credentials.signal]);
      let finished = false;
      // A live follower's events are written as they arrive (see FollowOptions.direct); the loop
      // below sends the rest: catch-up, heartbeats, the terminal event, and whatever a slow client
      // could not take at once.
      const direct = (item: FollowEvent<SharedEvent>) =>
        !credentials.signal.aborted &&
        !ctx.stopping.aborted &&
        ctx.trySendFramed({ preEncoded: item.payload.wire }, item.payload.framed);
      try {
        for await (const item of d.follow.follow(id, from, signal, { direct })) {
          if (item.kind === "event" && isTerminal(item.payload.event.event)) finished = true;
          await send(
            item.kind === "event"
              ? { preEncoded: item.payload.wire }
              : { item: { $case: "heartbeat", value: { timeMs: BigInt(Date.now()) } } },
          );
        }
      } catch (e) {
        if (e instanceof FollowGapError) throw await outputExpired(d, id, e.missingFrom);
        throw e;
      }
      if (finished || ctx.signal.aborted) return;
      if (credentials.signal.aborted) throw credentials.signal.reason;
      if (ctx.stopping.aborted) {
        throw new UnavailableError("this replica is shutting down; follow again with after_sequence");
      }
    } finally {
      credentials.dispose();
    }
  };
}

/**
 * A finished generation's follow: OUT_OF_RANGE when the events it needs have
 * left the output stream. Checked here because a follow of an emptied
 * subject would otherwise wait for events that never come. One message read.
 */
async function checkRetained(d: FollowDeps, g: Existing, after: number): Promise<void> {
  const earliest = await d.output.earliestSequence(g.request.generationId);
  if (earliest === undefined || earliest > after + 1) {
    throw expiredError(d, g.request.generationId, after + 1, earliest);
  }
}

/**
 * Sends the snapshot of everything written so far, when it covers more than
 * the caller has; returns the sequence the follow goes on after. The
 * terminal event is never in a snapshot: it always follows, with its digest.
 */
async function sendSnapshot(d: FollowDeps, g: Existing, after: number, send: Send): Promise<number> {
  const id = g.request.generationId;
  let at: Awaited<ReturnType<FollowDeps["output"]["positionFromStart"]>>;
  try {
    at = await d.output.positionFromStart(id);
  } catch (e) {
    if (e instanceof FollowGapError) throw await outputExpired(d, id, 1);
    throw e;
  }
  // Every output starts with `created`: a finished generation's empty output has expired (a new
  // one's may be empty for the moment between its request and `created`: no snapshot yet).
  if (at.sequence === 0 && g.kind === "finished") throw expiredError(d, id, 1, undefined);
  const covered = at.terminal ? at.sequence - 1 : at.sequence;
  if (covered <= after) return after;
  await send({
    item: {
      $case: "snapshot",
      value: {
        generationId: id,
        sequence: BigInt(covered),
        text: at.text,
        toolCalls: at.toolCalls,
        outputEvents: BigInt(at.outputEvents),
        usage: at.usage,
      },
    },
  });
  return covered;
}

async function outputExpired(d: FollowDeps, id: string, requested: number): Promise<OutOfRangeError> {
  const earliest = await d.output.earliestSequence(id).catch(() => undefined);
  return expiredError(d, id, requested, earliest);
}

function expiredError(
  d: FollowDeps,
  id: string,
  requested: number,
  earliest: number | undefined,
): OutOfRangeError {
  const detail = OutputExpired.create({
    generationId: id,
    requestedSequence: BigInt(requested),
    earliestSequence: BigInt(earliest ?? 0),
    retentionSeconds: BigInt(d.retentionSeconds),
    transcriptMethod: TRANSCRIPT_METHOD,
  });
  const kept =
    earliest === undefined
      ? "no event of it is stored any more"
      : `the earliest stored is ${earliest} (resume with after_sequence ${earliest - 1})`;
  return new OutOfRangeError(
    `events from sequence ${requested} are past the output retention (${d.retentionSeconds} s); ${kept}; ` +
      `the final transcript is in ${TRANSCRIPT_METHOD}`,
    [{ typeUrl: OUTPUT_EXPIRED_TYPE, value: OutputExpired.encode(detail).finish() }],
  );
}

/**
 * ctx.send, failing with the signal's reason once it aborts, even while a
 * send waits for a client that does not read (a revoked stream must end). One
 * abort listener per stream, not per event: each send only records how to
 * reject it.
 */
function sendUntil(send: Send, signal: AbortSignal): Send {
  let rejectPending: ((reason: unknown) => void) | undefined;
  signal.addEventListener("abort", () => rejectPending?.(signal.reason), { once: true });
  return (message) => {
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      rejectPending = reject;
      send(message).then(resolve, reject);
    });
  };
}
