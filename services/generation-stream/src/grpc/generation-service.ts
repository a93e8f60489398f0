import {
  type AsyncService,
  type GrpcFrame,
  PRODUCE_SCOPE,
  principalOf,
  type RequestRules,
  type Rule,
  rule,
  type ServicePolicies,
  toGrpcFrame,
} from "@spool/kit";
import {
  FollowGenerationResponse,
  type GenerationEvent,
  GenerationServiceService,
  type Message,
  type Parameters,
  type StartGenerationRequest,
} from "@spool/proto/spool/generation/v1/generation.js";
import type { Generations } from "../app/generations.js";
import { isTerminal } from "../app/output-log.js";
import { GenStreams, OutputEvent, Subjects } from "../domain/events.js";
import type { DirectDelivery } from "../follow/index.js";
import type { GenerationsReadModel } from "../projections/generations.js";
import { type FollowDeps, followGenerationHandler } from "./follow-generation.js";
import { decodePageToken, encodePageToken, fromAggregate, fromRow, ROW_STATUS_OF } from "./mapping.js";
import {
  conversationToolRule,
  messageToolRule,
  requestToolRule,
  type ToolLimits,
  toolCallsRule,
  toolsRule,
} from "./tool-rules.js";

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

/** What a StartGeneration request may hold (server settings). */
export interface RequestLimits extends ToolLimits {
  maxMessages: number;
  maxMessageChars: number;
  maxTotalChars: number;
  maxFileIds: number;
  models: readonly string[];
}

const ID = /^[A-Za-z0-9_-]{1,128}$/;
const ID_FORMAT = "1-128 of letters, digits, '_', '-'";
const ROLES = new Set(["system", "user", "assistant", "tool"]);

function idList(max: number): Rule<string[]> {
  return (list, field, v) => {
    if (list.length > max) v.check(field, `at most ${max}`);
    if (list.some((id) => !ID.test(id))) v.check(field, `ids are ${ID_FORMAT}`);
  };
}
const ids = idList(100);

/** file_ids: each named once (access is checked in app/, against the files projection). */
function fileIdList(max: number): Rule<string[]> {
  const shape = idList(max);
  return (list, field, v) => {
    shape(list, field, v);
    if (new Set(list).size !== list.length) v.check(field, "each file at most once");
  };
}

/** A message's characters: its text and the arguments of the tool calls it carries back. */
const charsOf = (m: Message) =>
  m.toolCalls.reduce((sum, c) => sum + c.argumentsJson.length, m.content.length);

function messages(l: RequestLimits): Rule<Message[]> {
  const message = rule.fields<Message>(
    {
      role: rule.check((role) => (ROLES.has(role) ? undefined : "system, user, assistant or tool")),
      toolCalls: toolCallsRule(l),
    },
    // Text is required, except from an assistant turn that only called tools.
    (m, field, v) => {
      const chars = charsOf(m);
      if (chars > l.maxMessageChars) v.check(`${field}.content`, `at most ${l.maxMessageChars} characters`);
      else if (!/\S/u.test(m.content) && !(m.role === "assistant" && m.toolCalls.length > 0))
        v.check(`${field}.content`, "required: not empty or only whitespace");
    },
    messageToolRule,
  );
  return (list, field, v) => {
    if (list.length === 0) v.check(field, "at least one message is required");
    if (list.length > l.maxMessages) v.check(field, `at most ${l.maxMessages} messages`);
    rule.each(message)(list, field, v);
    conversationToolRule(list, field, v);
    // A generation answers the last message: the user's turn or a tool's result, never its own
    // (assistant) or a bare instruction (system).
    const last = list.length - 1;
    const lastRole = list[last]?.role;
    if (lastRole !== undefined && ROLES.has(lastRole) && lastRole !== "user" && lastRole !== "tool")
      v.check(`${field}[${last}].role`, "the last message is from the user or a tool");
    const total = list.reduce((sum, m) => sum + charsOf(m), 0);
    if (total > l.maxTotalChars) v.check(field, `at most ${l.maxTotalChars} characters in all`);
  };
}

const parameters = rule.fields<Parameters>({
  temperature: rule.optional(rule.check((t) => (t >= 0 && t <= 2 ? undefined : "0 to 2"))),
  topP: rule.optional(rule.check((p) => (p > 0 && p <= 1 ? undefined : "greater than 0, at most 1"))),
  maxTokens: rule.optional(rule.check((n) => (n >= 1 && n <= 1_000_000 ? undefined : "1 to 1,000,000"))),
});

/** What each request must be, checked by `guarded()` after the policy; access and limits are in app/. */
export function generationRules(l: RequestLimits): RequestRules<Definition> {
  return {
    startGeneration: rule.fields<StartGenerationRequest>(
      {
        clientRequestId: rule.matches(ID, ID_FORMAT),
        model: rule.check((m) =>
          l.models.includes(m) ? undefined : `unknown model; one of ${l.models.join(", ")}`,
        ),
        messages: messages(l),
        toolIds: ids,
        fileIds: fileIdList(l.maxFileIds),
        conversationId: rule.check((id) => (id && !ID.test(id) ? ID_FORMAT : undefined)),
        parameters,
        tools: toolsRule(l),
      },
      requestToolRule,
    ),
    // A uint64 beyond 2^53 would be rounded by Number(): refused, by its proto name.
    followGeneration: { afterSequence: rule.sequence },
    getGeneration: {},
    listGenerations: {
      pageSize: rule.check((n) => (n < 0 || n > 500 ? "0-500 (0 means 50)" : undefined)),
      status: rule.check((st) => (st && !ROW_STATUS_OF[st] ? "unknown status" : undefined)),
      // Beyond a Date's range, new Date() is invalid and PostgreSQL answers an error (INTERNAL).
      createdAfterMs: rule.timestampMs,
      createdBeforeMs: rule.timestampMs,
    },
    cancelGeneration: {},
    claimGeneration: { waitMs: rule.check((ms) => (ms < 0 || ms > 30_000 ? "0 to 30000" : undefined)) },
    // Client-streaming: its messages are checked by produce.ts.
    produceGeneration: {},
  };
}

/**
 * An output event as the hub shares it: decoded once (sequence, terminal) and
 * encoded once as a FollowGenerationResponse, so each of a generation's
 * followers costs a buffer write, not a protobuf encoding.
 */
export interface SharedEvent {
  event: GenerationEvent;
  /** The encoded FollowGenerationResponse: a view of `framed` past its prefix. */
  wire: Buffer;
  /** `wire` as a gRPC frame, written as it is to each live follower's HTTP/2 stream (kit trySendFramed). */
  framed: GrpcFrame;
}

export type FollowItem = { kind: "event"; sequence: number; payload: SharedEvent } | { kind: "heartbeat" };

/** A FollowGenerationResponse already encoded (see followDefinition). */
export interface PreEncoded {
  preEncoded: Buffer;
}

/** An event as every follower gets it: encoded once, straight into its gRPC frame. */
export function shareEvent(event: GenerationEvent): SharedEvent {
  const framed = toGrpcFrame(
    FollowGenerationResponse.encode({ item: { $case: "event", value: event } }).finish(),
  );
  return { event, wire: framed.subarray(5), framed };
}

/** What a follower reads: the output subjects of GEN_OUTPUT, each event decoded and encoded once for all followers. */
export function outputFeed() {
  return {
    stream: GenStreams.GEN_OUTPUT.name,
    subjectOf: Subjects.output,
    decode: (msg: { data: Uint8Array }) => {
      const e = OutputEvent.decode(msg.data);
      const payload = shareEvent(e);
      return { sequence: Number(e.sequence), terminal: isTerminal(e.event), payload };
    },
  };
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
  follow(
    generationId: string,
    after: number,
    signal: AbortSignal,
    options?: { direct?: DirectDelivery<SharedEvent> },
  ): AsyncIterable<FollowItem>;
}

export interface GenerationServiceDeps extends FollowDeps {
  generations: Generations;
  readModel: GenerationsReadModel;
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
        tools: req.tools,
        toolChoice: req.toolChoice,
      });
      return { generation: fromAggregate(generation, 1), created };
    },

    followGeneration: followGenerationHandler(d),

    async getGeneration(req, ctx) {
      // The lifecycle subject is kept for good, so this answers long after the output has expired.
      return {
        generation: fromAggregate(await d.generations.get(principalOf(ctx), req.generationId), 0),
      };
    },

    async listGenerations(req, ctx) {
      const caller = principalOf(ctx);
      const status = req.status ? ROW_STATUS_OF[req.status] : undefined;
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
