import type { EventOf, Sql } from "@spool/kit";
import { AuthStreams, defineProjection, storableJson, storableText, unreachable } from "@spool/kit";
import { AuthEvents } from "../domain/events.js";

/** The audited types, and UserCreated (to place failed logins); every other type decodes as unknown. */
const AuditEvents = AuthEvents.pick(
  "UserCreated",
  "LoginSucceeded",
  "LoginFailed",
  "LoginLockedOut",
  "RefreshTokenReused",
  "SessionRevoked",
  "UserRolesChanged",
  "UserDisabled",
  "UserEnabled",
  "UserDeleted",
  "UserPasswordReset",
  "ServiceAccountDisabled",
  "ServiceAccountEnabled",
  "ServiceAccountDeleted",
  "ServiceAccountSecretRotated",
  "SigningKeyActivated",
);
type AuditEvent = EventOf<typeof AuditEvents>;

interface AuditRow {
  userId: string;
  orgId: string;
  ip: string;
  details: Record<string, unknown>;
}

/** The audited event types and what each records (never secrets, hashes or tokens). */
function auditRow(event: Exclude<AuditEvent, { type: "UserCreated" }>): AuditRow | undefined {
  switch (event.type) {
    case "LoginSucceeded": {
      const e = event.data;
      return { userId: e.userId, orgId: e.orgId, ip: e.ip, details: { sessionId: e.sessionId } };
    }
    case "LoginFailed": {
      const e = event.data;
      return { userId: e.userId, orgId: "", ip: e.ip, details: { account: e.account, reason: e.reason } };
    }
    case "LoginLockedOut": {
      const e = event.data;
      return {
        userId: "",
        orgId: "",
        ip: e.ip,
        details: { account: e.account, scope: e.scope, blockedUntilMs: Number(e.blockedUntilMs) },
      };
    }
    case "RefreshTokenReused": {
      const e = event.data;
      return {
        userId: e.userId,
        orgId: "",
        ip: e.ip,
        details: { sessionId: e.sessionId, reusedGeneration: e.reusedGeneration },
      };
    }
    case "SessionRevoked": {
      const e = event.data;
      return {
        userId: e.userId,
        orgId: e.orgId,
        ip: "",
        details: { sessionId: e.sessionId, reason: e.reason, revokedBy: e.revokedBy },
      };
    }
    case "UserRolesChanged": {
      const e = event.data;
      return {
        userId: e.userId,
        orgId: e.orgId,
        ip: "",
        details: { previousRoles: e.previousRoles, roles: e.roles },
      };
    }
    // Withdrawals: who did it is the event's actor; the password hash is never recorded.
    case "UserDisabled": {
      const e = event.data;
      return { userId: e.userId, orgId: e.orgId, ip: "", details: { disabledBy: e.disabledBy } };
    }
    case "UserEnabled": {
      const e = event.data;
      return { userId: e.userId, orgId: e.orgId, ip: "", details: { enabledBy: e.enabledBy } };
    }
    case "UserDeleted": {
      const e = event.data;
      return { userId: e.userId, orgId: e.orgId, ip: "", details: { deletedBy: e.deletedBy } };
    }
    case "UserPasswordReset": {
      const e = event.data;
      return { userId: e.userId, orgId: e.orgId, ip: "", details: { resetBy: e.resetBy } };
    }
    case "ServiceAccountDisabled": {
      const e = event.data;
      return {
        userId: "",
        orgId: e.orgId,
        ip: "",
        details: { serviceAccountId: e.serviceAccountId, disabledBy: e.disabledBy },
      };
    }
    case "ServiceAccountEnabled": {
      const e = event.data;
      return {
        userId: "",
        orgId: e.orgId,
        ip: "",
        details: { serviceAccountId: e.serviceAccountId, enabledBy: e.enabledBy },
      };
    }
    case "ServiceAccountDeleted": {
      const e = event.data;
      return {
        userId: "",
        orgId: e.orgId,
        ip: "",
        details: { serviceAccountId: e.serviceAccountId, deletedBy: e.deletedBy },
      };
    }
    case "ServiceAccountSecretRotated": {
      const e = event.data;
      return {
        userId: "",
        orgId: e.orgId,
        ip: "",
        details: {
          serviceAccountId: e.serviceAccountId,
          rotatedBy: e.rotatedBy,
          previousValidUntilMs: Number(e.previousValidUntilMs),
        },
      };
    }
    case "SigningKeyActivated": {
      const e = event.data;
      return { userId: "", orgId: "", ip: "", details: { kid: e.kid, previousKid: e.previousKid } };
    }
    case "unknown":
      return undefined;
    default:
      return unreachable(event);
  }
}

/**
 * The audit log: every login success and failure, lockout, refresh reuse,
 * revocation, role change, key rotation, and withdrawal of a user (disable,
 * enable, delete, password reset) or a service account (disable, enable,
 * delete, secret rotation). Failed logins name the account
 * tried; their organisation is resolved from the users the projection knows.
 */
export const auditProjection = defineProjection({
  name: "auth_audit",
  stream: AuthStreams.AUTH.name,
  tables: ["auth_audit", "auth_audit_users"],
  migrate: async (tx, t) => {
    await tx.unsafe(`CREATE TABLE ${t.auth_audit} (
      seq bigint NOT NULL,
      idx integer NOT NULL,
      event_id text NOT NULL,
      type text NOT NULL,
      time timestamptz NOT NULL,
      org_id text NOT NULL,
      user_id text NOT NULL,
      actor text NOT NULL,
      ip text NOT NULL,
      details jsonb NOT NULL,
      PRIMARY KEY (seq, idx)
    )`);
    await tx.unsafe(`CREATE INDEX ON ${t.auth_audit} (org_id, seq DESC)`);
    // Users' organisations and emails, to place a failed login in its organisation.
    await tx.unsafe(`CREATE TABLE ${t.auth_audit_users} (
      user_id text PRIMARY KEY, org_id text NOT NULL, email text NOT NULL UNIQUE)`);
  },
  events: AuditEvents,
  apply: async (tx, event, { tables }) => {
    if (event.type === "UserCreated") {
      const e = event.data;
      await tx.unsafe(`INSERT INTO ${tables.auth_audit_users} VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, [
        storableText(e.userId),
        storableText(e.orgId),
        storableText(e.email),
      ]);
      return;
    }
    // Every event the command side accepted must apply: text PostgreSQL
    // cannot hold (NUL, in events older than the edge's check) is replaced.
    const found = auditRow(event);
    if (!found || event.type === "unknown") return;
    // The type header as written (the table keeps full names, e.g. "spool.auth.v1.LoginFailed").
    const type = AuditEvents.typeName(event.type);
    const row = storableJson(found);
    let { orgId, userId } = row;
    if (!orgId) {
      const account = typeof row.details.account === "string" ? row.details.account : "";
      const [known] = await tx.unsafe<{ user_id: string; org_id: string }[]>(
        `SELECT user_id, org_id FROM ${tables.auth_audit_users} WHERE user_id = $1 OR email = $2 LIMIT 1`,
        [userId, account],
      );
      orgId = known?.org_id ?? "";
      userId ||= known?.user_id ?? "";
    }
    await tx.unsafe(
      `INSERT INTO ${tables.auth_audit} (seq, idx, event_id, type, time, org_id, user_id, actor, ip, details)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
      [
        event.meta.streamSequence,
        event.meta.index,
        storableText(event.meta.eventId),
        storableText(type),
        event.meta.time,
        orgId,
        userId,
        storableText(event.meta.actor ?? ""),
        row.ip,
        tx.json(row.details as never),
      ],
    );
  },
});

export interface AuditQuery {
  orgId: string;
  userId?: string;
  type?: string;
  sinceMs?: number;
  untilMs?: number;
  limit: number;
  /** Keyset cursor: the (seq, idx) of the last item of the previous page. */
  after?: { seq: number; idx: number };
}

export interface AuditEntry {
  seq: number;
  idx: number;
  eventId: string;
  type: string;
  timeMs: number;
  userId: string;
  actor: string;
  ip: string;
  details: Record<string, unknown>;
}

export class AuditReadModel {
  readonly #sql: Sql;
  constructor(sql: Sql) {
    this.#sql = sql;
  }

  /** Newest first; filters are independent and combine with AND. */
  async list(q: AuditQuery): Promise<{ entries: AuditEntry[]; more: boolean }> {
    const rows = await this.#sql<
      {
        seq: string;
        idx: number;
        event_id: string;
        type: string;
        time: Date;
        user_id: string;
        actor: string;
        ip: string;
        details: Record<string, unknown>;
      }[]
    >`
      SELECT seq, idx, event_id, type, time, user_id, actor, ip, details FROM auth_audit
      WHERE org_id = ${q.orgId}
        AND (${q.userId ?? null}::text IS NULL OR user_id = ${q.userId ?? null})
        AND (${q.type ?? null}::text IS NULL OR type = ${q.type ?? null})
        AND (${q.sinceMs ?? null}::bigint IS NULL OR time >= to_timestamp(${q.sinceMs ?? null}::double precision / 1000))
        AND (${q.untilMs ?? null}::bigint IS NULL OR time < to_timestamp(${q.untilMs ?? null}::double precision / 1000))
        AND (${q.after?.seq ?? null}::bigint IS NULL OR (seq, idx) < (${q.after?.seq ?? 0}::bigint, ${q.after?.idx ?? 0}::int))
      ORDER BY seq DESC, idx DESC
      LIMIT ${q.limit + 1}`;
    return {
      more: rows.length > q.limit,
      entries: rows.slice(0, q.limit).map((r) => ({
        seq: Number(r.seq),
        idx: r.idx,
        eventId: r.event_id,
        type: r.type,
        timeMs: r.time.getTime(),
        userId: r.user_id,
        actor: r.actor,
        ip: r.ip,
        details: r.details,
      })),
    };
  }
}
