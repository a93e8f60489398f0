import {
  type BidiStreamMethod,
  type CallContext,
  type EventStore,
  FailedPreconditionError,
  InvalidArgumentError,
  type Logger,
  NotFoundError,
  type Principal,
  principalOf,
} from "@spool/kit";
import type {
  ClaimGenerationRequest,
  ClaimGenerationResponse,
  ProduceGenerationRequest,
  ProduceGenerationResponse,
} from "@spool/proto/spool/generation/v1/generation.js";
import { watchCancel } from "../app/cancel-watch.js";
import type { OutputLog } from "../app/output-log.js";
import { type LeasePolicy, ProducerSession } from "../app/producer.js";
import type { Producer } from "../domain/generation.js";

export interface ProduceDeps {
  store: EventStore;
  output: OutputLog;
  lease: LeasePolicy;
  logger: Logger;
  /** Oldest queued generations of the organisation that no built-in worker serves. */
  queued: (orgId: string, limit: number) => Promise<string[]>;
}

/** An external producer serves only the organisation of its verified token. */
function producerOf(p: Principal): Extract<Producer, { kind: "organisation" }> {
  return { kind: "organisation", id: p.subject, orgId: p.orgId };
}

/** ClaimGeneration: a lease for the named generation, or for the oldest queued one within wait_ms. */
export function claimHandler(d: ProduceDeps) {
  return async (req: ClaimGenerationRequest, ctx: CallContext): Promise<ClaimGenerationResponse> => {
    const producer = producerOf(principalOf(ctx));
    const deps = { store: d.store, output: d.output, policy: d.lease };
    const respond = (s: ProducerSession): ClaimGenerationResponse => ({
      lease: {
        generationId: s.generationId,
        epoch: BigInt(s.epoch),
        expiresAtMs: BigInt(s.generation.leaseExpiresAtMs),
      },
      model: s.generation.request.model,
      messages: s.generation.request.messages,
      parameters: s.generation.request.parameters,
      toolIds: s.generation.request.toolIds,
      fileIds: s.generation.request.fileIds,
      tools: s.generation.request.tools,
      toolChoice: s.generation.request.toolChoice,
    });
    if (req.generationId) return respond(await ProducerSession.claim(deps, req.generationId, producer));
    const until = Date.now() + Math.min(req.waitMs, ctx.remainingMs());
    do {
      for (const id of await d.queued(producer.orgId, 10)) {
        try {
          return respond(await ProducerSession.claim(deps, id, producer));
        } catch (e) {
          // Taken by someone else (or, should the read model ever disagree, not ours): next one.
          if (!(e instanceof FailedPreconditionError || e instanceof NotFoundError)) throw e;
        }
      }
      await new Promise((r) => setTimeout(r, 200));
    } while (Date.now() < until && !ctx.signal.aborted);
    return {
      lease: undefined,
      model: "",
      messages: [],
      parameters: undefined,
      toolIds: [],
      fileIds: [],
      tools: [],
    };
  };
}

/**
 * ProduceGeneration (bidirectional), guarded like every RPC (the kit checks
 * the token and the producer scope before any message is read): the first
 * message names the lease; each event is appended in order and acked with its
 * sequence. A stale or expired lease ends the stream with FAILED_PRECONDITION;
 * a cancel of the generation is sent to the producer.
 */
export function produceHandler(
  d: ProduceDeps,
): BidiStreamMethod<ProduceGenerationRequest, ProduceGenerationResponse> {
  return async (requests, ctx) => {
    const producer = producerOf(principalOf(ctx));
    let session: ProducerSession | undefined;
    let stopWatch: (() => void) | undefined;
    let cancelRequested = false;
    try {
      for await (const msg of requests) {
        const item = msg.item;
        if (!item) throw new InvalidArgumentError("empty message");
        if (!session) {
          if (item.$case !== "lease") throw new InvalidArgumentError("the first message must name the lease");
          session = await ProducerSession.resume(
            { store: d.store, output: d.output, policy: d.lease },
            item.value.generationId,
            Number(item.value.epoch),
            producer,
          );
          stopWatch = watchCancel(d.store, d.logger, session.generationId, (requestedBy) => {
            cancelRequested = true;
            // Out of band, between acks; once the call has ended there is nobody to tell.
            ctx.send({ item: { $case: "cancel", value: { requestedBy } } }).catch(() => {});
          });
          continue;
        }
        let sequence: number | undefined;
        switch (item.$case) {
          case "lease":
            throw new InvalidArgumentError("the lease is named once");
          case "delta":
            sequence = await session.delta(item.value.text);
            break;
          case "toolCall":
            sequence = await session.toolCall(item.value);
            break;
          case "usage":
            sequence = await session.usage(item.value.usage ?? { promptTokens: 0n, completionTokens: 0n });
            break;
          case "renew": {
            const expiresAtMs = await session.renew();
            await ctx.send({
              item: {
                $case: "lease",
                value: {
                  generationId: session.generationId,
                  epoch: BigInt(session.epoch),
                  expiresAtMs: BigInt(expiresAtMs),
                },
              },
            });
            continue;
          }
          case "completed":
            await session.complete();
            sequence = session.position.sequence;
            break;
          case "failed":
            await session.fail(item.value.reason, item.value.message);
            sequence = session.position.sequence;
            break;
        }
        if (sequence !== undefined)
          await ctx.send({ item: { $case: "appended", value: { sequence: BigInt(sequence) } } });
        // Finished: the stream ends OK; anything the producer sends after is not read.
        if (session.finished) return;
      }
      // The producer stopped after being told of a cancel: the terminal event is written for it.
      if (cancelRequested && session && !session.finished) await session.cancelled();
    } finally {
      stopWatch?.();
    }
  };
}
