import { InvalidArgumentError } from "@spool/kit";
import {
  type Generation as GenerationMessage,
  GenerationStatus,
} from "@spool/proto/spool/generation/v1/generation.js";
import type { Existing } from "../domain/generation.js";
import type { GenerationRow } from "../projections/generations.js";

const STATUS_OF_KIND = {
  queued: GenerationStatus.GENERATION_STATUS_QUEUED,
  running: GenerationStatus.GENERATION_STATUS_RUNNING,
} as const;

const STATUS_OF_ROW: Record<GenerationRow["status"], GenerationStatus> = {
  queued: GenerationStatus.GENERATION_STATUS_QUEUED,
  running: GenerationStatus.GENERATION_STATUS_RUNNING,
  completed: GenerationStatus.GENERATION_STATUS_COMPLETED,
  failed: GenerationStatus.GENERATION_STATUS_FAILED,
  cancelled: GenerationStatus.GENERATION_STATUS_CANCELLED,
};

export const ROW_STATUS_OF: Partial<Record<GenerationStatus, GenerationRow["status"]>> = Object.fromEntries(
  Object.entries(STATUS_OF_ROW).map(([k, v]) => [v, k]),
);

/** From the lifecycle aggregate (always current). */
export function fromAggregate(g: Existing, lastSequence: number): GenerationMessage {
  const o = g.outcome;
  return {
    generationId: g.request.generationId,
    orgId: g.request.orgId,
    ownerId: g.request.ownerId,
    conversationId: g.request.conversationId,
    model: g.request.model,
    status:
      g.kind === "finished" && o ? o.status : STATUS_OF_KIND[g.kind === "finished" ? "running" : g.kind],
    failureReason: o?.failureReason ?? 0,
    failureMessage: o?.failureMessage ?? "",
    usage: o?.usage ?? { promptTokens: 0n, completionTokens: 0n },
    text: o?.text ?? "",
    createdAtMs: BigInt(g.createdAtMs),
    finishedAtMs: BigInt(g.finishedAtMs),
    lastSequence: BigInt(o?.lastSequence ?? lastSequence),
  };
}

/** From the projection (answers after the output stream's retention). */
export function fromRow(r: GenerationRow): GenerationMessage {
  return {
    generationId: r.generation_id,
    orgId: r.org_id,
    ownerId: r.owner_id,
    conversationId: r.conversation_id,
    model: r.model,
    status: STATUS_OF_ROW[r.status],
    failureReason: r.failure_reason,
    failureMessage: r.failure_message,
    usage: { promptTokens: BigInt(r.prompt_tokens), completionTokens: BigInt(r.completion_tokens) },
    text: r.text,
    createdAtMs: BigInt(r.created_at.getTime()),
    finishedAtMs: BigInt(r.finished_at?.getTime() ?? 0),
    lastSequence: BigInt(r.last_sequence),
  };
}

export function encodePageToken(createdAt: Date, id: string): string {
  return Buffer.from(JSON.stringify([createdAt.getTime(), id])).toString("base64url");
}

export function decodePageToken(token: string): { createdAt: Date; id: string } | undefined {
  if (!token) return undefined;
  try {
    const v = JSON.parse(Buffer.from(token, "base64url").toString()) as unknown;
    if (Array.isArray(v) && v.length === 2 && Number.isSafeInteger(v[0]) && typeof v[1] === "string") {
      return { createdAt: new Date(v[0] as number), id: v[1] };
    }
  } catch {
    // fall through
  }
  throw new InvalidArgumentError("invalid page token", [
    { field: "page_token", description: "is not a token from this API" },
  ]);
}
