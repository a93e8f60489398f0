import {
  type AsyncService,
  InvalidArgumentError,
  PRODUCE_SCOPE,
  principalOf,
  type ServicePolicies,
  sequenceNumber,
  timestampMsProblem,
  UnavailableError,
} from "@spool/kit";
import {
  FollowGenerationResponse,
  type GenerationEvent,
  GenerationServiceService,
} from "@spool/proto/spool/generation/v1/generation.js";
import type { Generations } from "../app/generations.js";
import { isTerminal } from "../app/output-log.js";
import type { GenerationsReadModel } from "../projections/generations.js";
import { decodePageToken, encodePageToken, fromAggregate, fromRow, ROW_STATUS_OF } from "./mapping.js";

type Definition = typeof followDefinition;

/** Producers' scope: claim and produce (the scope catalogue is the kit's). */
export { PRODUCE_SCOPE };

export const generationPolicies: ServicePolicies<Definition> = {
  startGeneration: { kind: "user" },
  followGeneration: { kind: "any" },
  getGeneration: { kind: "any" },
  listGenerations: { kind: "user" },
  cancelGeneration: { kind: "user" },
  claimGeneration: { kind: "service", scopes: [PRODUCE_SCOPE] },
  produceGeneration: { kind: "service", scopes: [PRODUCE_SCOPE] },
};

/**
 * An output event as the hub shares it: decoded once (sequence, terminal) and
 * encoded once as a FollowGenerationResponse, so each of a generation's
 * followers costs a buffer write, not a protobuf encoding.
 */
export interface SharedEvent {
  event: GenerationEvent;
  wire: Buffer;
}

export type FollowItem = { kind: "event"; sequence: number; payload: SharedEvent } | { kind: "heartbeat" };

/** A FollowGenerationResponse already encoded (see followDefinition). */
export interface PreEncoded {
  preEncoded: Buffer;
}

export function encodeFollowEvent(event: GenerationEvent): Buffer {
  return Buffer.from(FollowGenerationResponse.encode({ item: { $case: "event", value: event } }).finish());
}

/** The service definition with a FollowGeneration serializer that passes pre-encoded responses through. */
export const followDefinition = {
  ...GenerationServiceService,
  followGeneration: {
    ...GenerationServiceService.followGeneration,
    responseSerialize: (value: FollowGenerationResponse | PreEncoded): Buffer =>
      "preEncoded" in value ? value.preEncoded : Buffer.from(FollowGenerationResponse.encode(value).finish()),
  },
} as const;

/** The follow fan-out (follow/hub.ts) as the service uses it. */
export interface FollowSource {
  follow(generationId: string, after: number, signal: AbortSignal): AsyncIterable<FollowItem>;
}

export interface GenerationServiceDeps {
  generations: Generations;
  readModel: GenerationsReadModel;
  follow: FollowSource;
  claim: AsyncService<Definition>["claimGeneration"];
}

export function generationService(
  d: GenerationServiceDeps,
): Omit<AsyncService<Definition>, "produceGeneration"> {
  return {
    async startGeneration(req, ctx) {
      const { generation, created } = await d.generations.start(principalOf(ctx), {
        clientRequestId: req.clientRequestId,
        model: req.model,
        messages: req.messages,
        parameters: req.parameters,
        toolIds: req.toolIds,
        fileIds: req.fileIds,
        conversationId: req.conversationId,
      });
      return { generation: fromAggregate(generation, 1), created };
    },

    async followGeneration(req, ctx) {
      // A uint64 beyond 2^53 would be rounded by Number(): refused, by its proto name.
      const after = sequenceNumber("after_sequence", req.afterSequence);
      // Existence and access first: another organisation's generation is NOT_FOUND.
      await d.generations.visible(principalOf(ctx), req.generationId);
      // Shutdown ends follows at once (the grace period is for short calls); the client
      // resumes on another replica from the last sequence it saw.
      const signal = AbortSignal.any([ctx.signal, ctx.stopping]);
      let finished = false;
      for await (const item of d.follow.follow(req.generationId, after, signal)) {
        if (item.kind === "event" && isTerminal(item.payload.event.event)) finished = true;
        await ctx.send(
          item.kind === "event"
            ? { preEncoded: item.payload.wire }
            : { item: { $case: "heartbeat", value: { timeMs: BigInt(Date.now()) } } },
        );
      }
      if (!finished && ctx.stopping.aborted && !ctx.signal.aborted) {
        throw new UnavailableError("this replica is shutting down; follow again with after_sequence");
      }
    },

    async getGeneration(req, ctx) {
      // The lifecycle subject is kept for good, so this answers long after the output has expired.
      return {
        generation: fromAggregate(await d.generations.get(principalOf(ctx), req.generationId), 0),
      };
    },

    async listGenerations(req, ctx) {
      const caller = principalOf(ctx);
      const v: { field: string; description: string }[] = [];
      if (req.pageSize < 0 || req.pageSize > 500)
        v.push({ field: "page_size", description: "0-500 (0 means 50)" });
      const status = req.status ? ROW_STATUS_OF[req.status] : undefined;
      if (req.status && !status) v.push({ field: "status", description: "unknown status" });
      // Beyond a Date's range, new Date() is invalid and PostgreSQL answers an error (INTERNAL).
      for (const [field, value] of [
        ["created_after_ms", req.createdAfterMs],
        ["created_before_ms", req.createdBeforeMs],
      ] as const) {
        const problem = timestampMsProblem(value);
        if (problem) v.push({ field, description: problem });
      }
      if (v.length > 0) throw new InvalidArgumentError("invalid list request", v);
      const after = decodePageToken(req.pageToken);
      const limit = req.pageSize || 50;
      // The caller's own generations, whatever its role (the proto's promise); owners and admins
      // reach a colleague's generation by id (Get, Follow, Cancel).
      const { rows, more } = await d.readModel.list({
        orgId: caller.orgId,
        ownerId: caller.subject,
        ...(status ? { status } : {}),
        ...(req.conversationId ? { conversationId: req.conversationId } : {}),
        ...(req.createdAfterMs > 0n ? { createdAfter: new Date(Number(req.createdAfterMs)) } : {}),
        ...(req.createdBeforeMs > 0n ? { createdBefore: new Date(Number(req.createdBeforeMs)) } : {}),
        limit,
        ...(after ? { after } : {}),
      });
      const last = rows.at(-1);
      return {
        generations: rows.map(fromRow),
        nextPageToken: more && last ? encodePageToken(last.created_at, last.generation_id) : "",
      };
    },

    async cancelGeneration(req, ctx) {
      const g = await d.generations.cancel(principalOf(ctx), req.generationId);
      return { generation: fromAggregate(g, 0) };
    },

    claimGeneration: (req, ctx) => d.claim(req, ctx),
  };
}
