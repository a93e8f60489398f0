import { defineProjection, type Sql, unreachable } from "@spool/kit";
import { GenerationStatus } from "@spool/proto/spool/generation/v1/generation.js";
import { GenerationEvents, GenStreams, Subjects } from "../domain/events.js";

const STATUS: Record<number, string> = {
  [GenerationStatus.GENERATION_STATUS_COMPLETED]: "completed",
  [GenerationStatus.GENERATION_STATUS_FAILED]: "failed",
  [GenerationStatus.GENERATION_STATUS_CANCELLED]: "cancelled",
};

/**
 * Generations for Get and List, from the GEN stream (kept for good): answers
 * after GEN_OUTPUT's retention has removed the output events, and lets the
 * sweeper find leases that ran out.
 */
export const generationsProjection = defineProjection({
  name: "generations",
  stream: GenStreams.GEN.name,
  filterSubject: Subjects.generation.all,
  tables: ["generations"],
  migrate: async (tx, t) => {
    await tx.unsafe(`CREATE TABLE ${t.generations} (
      generation_id text PRIMARY KEY,
      org_id text NOT NULL,
      owner_id text NOT NULL,
      conversation_id text NOT NULL,
      model text NOT NULL,
      status text NOT NULL,
      epoch bigint NOT NULL DEFAULT 0,
      lease_expires_at timestamptz,
      cancel_requested boolean NOT NULL DEFAULT false,
      failure_reason integer NOT NULL DEFAULT 0,
      failure_message text NOT NULL DEFAULT '',
      text text NOT NULL DEFAULT '',
      prompt_tokens bigint NOT NULL DEFAULT 0,
      completion_tokens bigint NOT NULL DEFAULT 0,
      last_sequence bigint NOT NULL DEFAULT 0,
      created_at timestamptz NOT NULL,
      finished_at timestamptz
    )`);
    await tx.unsafe(`CREATE INDEX ON ${t.generations} (owner_id, created_at DESC, generation_id DESC)`);
    await tx.unsafe(`CREATE INDEX ON ${t.generations} (org_id, created_at DESC, generation_id DESC)`);
    await tx.unsafe(`CREATE INDEX ON ${t.generations} (lease_expires_at) WHERE status = 'running'`);
  },
  events: GenerationEvents,
  apply: async (tx, event, { tables }) => {
    const t = tables.generations;
    const id = Subjects.generation.idOf(event.meta.subject);
    switch (event.type) {
      case "GenerationRequested": {
        const e = event.data;
        await tx.unsafe(
          `INSERT INTO ${t} (generation_id, org_id, owner_id, conversation_id, model, status, created_at)
         VALUES ($1, $2, $3, $4, $5, 'queued', $6) ON CONFLICT DO NOTHING`,
          [e.generationId, e.orgId, e.ownerId, e.conversationId, e.model, event.meta.time],
        );
        return;
      }
      case "GenerationLeaseGranted": {
        const e = event.data;
        await tx.unsafe(
          `UPDATE ${t} SET status = 'running', epoch = $2, lease_expires_at = to_timestamp($3::double precision / 1000)
         WHERE generation_id = $1 AND status <> ALL('{completed,failed,cancelled}')`,
          [id, Number(e.epoch), Number(e.expiresAtMs)],
        );
        return;
      }
      case "GenerationLeaseRenewed": {
        const e = event.data;
        await tx.unsafe(
          `UPDATE ${t} SET lease_expires_at = to_timestamp($3::double precision / 1000) WHERE generation_id = $1 AND epoch = $2`,
          [id, Number(e.epoch), Number(e.expiresAtMs)],
        );
        return;
      }
      case "GenerationRequeued":
        await tx.unsafe(
          `UPDATE ${t} SET status = 'queued', lease_expires_at = NULL WHERE generation_id = $1`,
          [id],
        );
        return;
      case "GenerationCancelRequested":
        await tx.unsafe(`UPDATE ${t} SET cancel_requested = true WHERE generation_id = $1`, [id]);
        return;
      case "GenerationFinished": {
        const e = event.data;
        await tx.unsafe(
          `UPDATE ${t} SET status = $2, failure_reason = $3, failure_message = $4, text = $5, prompt_tokens = $6,
           completion_tokens = $7, last_sequence = $8, finished_at = $9, lease_expires_at = NULL
         WHERE generation_id = $1`,
          [
            id,
            STATUS[e.status] ?? "failed",
            e.failureReason,
            e.failureMessage,
            e.text,
            Number(e.usage?.promptTokens ?? 0n),
            Number(e.usage?.completionTokens ?? 0n),
            Number(e.lastSequence),
            event.meta.time,
          ],
        );
        return;
      }
      case "unknown":
        return;
      default:
        unreachable(event);
    }
  },
});

export interface GenerationRow {
  generation_id: string;
  org_id: string;
  owner_id: string;
  conversation_id: string;
  model: string;
  status: "queued" | "running" | "completed" | "failed" | "cancelled";
  failure_reason: number;
  failure_message: string;
  text: string;
  prompt_tokens: string;
  completion_tokens: string;
  last_sequence: string;
  created_at: Date;
  finished_at: Date | null;
}

export interface ListQuery {
  orgId: string;
  /** Whose generations: a list is always one user's own (GenerationService.ListGenerations). */
  ownerId: string;
  status?: string;
  conversationId?: string;
  createdAfter?: Date;
  createdBefore?: Date;
  limit: number;
  after?: { createdAt: Date; id: string };
}

export class GenerationsReadModel {
  readonly #sql: Sql;
  constructor(sql: Sql) {
    this.#sql = sql;
  }

  async get(generationId: string): Promise<GenerationRow | undefined> {
    const [row] = await this.#sql<
      GenerationRow[]
    >`SELECT * FROM generations WHERE generation_id = ${generationId}`;
    return row;
  }

  /** Newest first; filters are independent and combine with AND; keyset pagination. */
  async list(q: ListQuery): Promise<{ rows: GenerationRow[]; more: boolean }> {
    const rows = await this.#sql<GenerationRow[]>`
      SELECT * FROM generations
      WHERE org_id = ${q.orgId} AND owner_id = ${q.ownerId}
        AND (${q.status ?? null}::text IS NULL OR status = ${q.status ?? null})
        AND (${q.conversationId ?? null}::text IS NULL OR conversation_id = ${q.conversationId ?? null})
        AND (${q.createdAfter ?? null}::timestamptz IS NULL OR created_at >= ${q.createdAfter ?? null})
        AND (${q.createdBefore ?? null}::timestamptz IS NULL OR created_at < ${q.createdBefore ?? null})
        AND (${q.after?.createdAt ?? null}::timestamptz IS NULL
             OR (created_at, generation_id) < (${q.after?.createdAt ?? new Date(0)}, ${q.after?.id ?? ""}))
      ORDER BY created_at DESC, generation_id DESC
      LIMIT ${q.limit + 1}`;
    return { rows: rows.slice(0, q.limit), more: rows.length > q.limit };
  }

  /** Running generations whose lease ran out. */
  async expiredLeases(limit = 100): Promise<{ generation_id: string; owner_id: string }[]> {
    return this.#sql`
      SELECT generation_id, owner_id FROM generations
      WHERE status = 'running' AND lease_expires_at < now()
      ORDER BY lease_expires_at LIMIT ${limit}`;
  }

  /** The organisation's oldest queued generations of models none of `builtIn` serves (external producers'). */
  async queuedExternal(orgId: string, builtIn: readonly string[], limit: number): Promise<string[]> {
    const rows = await this.#sql<{ generation_id: string }[]>`
      SELECT generation_id FROM generations WHERE org_id = ${orgId} AND status = 'queued'
        AND NOT (model = ANY(${[...builtIn]})) ORDER BY created_at LIMIT ${limit}`;
    return rows.map((r) => r.generation_id);
  }
}
