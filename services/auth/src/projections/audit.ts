import type { RecordedEvent, Sql } from "@spool/kit";
import { AuthStreams, defineProjection, storableJson, storableText } from "@spool/kit";
import {
  LoginFailed,
  LoginLockedOut,
  LoginSucceeded,
  RefreshTokenReused,
  ServiceAccountDeleted,
  ServiceAccountDisabled,
  ServiceAccountEnabled,
  ServiceAccountSecretRotated,
  SessionRevoked,
  SigningKeyActivated,
  UserCreated,
  UserDeleted,
  UserDisabled,
  UserEnabled,
  UserPasswordReset,
  UserRolesChanged,
} from "../domain/events.js";

interface AuditRow {
  userId: string;
  orgId: string;
  ip: string;
  details: Record<string, unknown>;
}

/** The audited event types and what each records (never secrets, hashes or tokens). */
function auditRow(event: RecordedEvent): AuditRow | undefined {
  if (LoginSucceeded.is(event)) {
    const e = LoginSucceeded.decode(event.data);
    return { userId: e.userId, orgId: e.orgId, ip: e.ip, details: { sessionId: e.sessionId } };
  }
  if (LoginFailed.is(event)) {
    const e = LoginFailed.decode(event.data);
    return { userId: e.userId, orgId: "", ip: e.ip, details: { account: e.account, reason: e.reason } };
  }
  if (LoginLockedOut.is(event)) {
    const e = LoginLockedOut.decode(event.data);
    return {
      userId: "",
      orgId: "",
      ip: e.ip,
      details: { account: e.account, scope: e.scope, blockedUntilMs: Number(e.blockedUntilMs) },
    };
  }
  if (RefreshTokenReused.is(event)) {
    const e = RefreshTokenReused.decode(event.data);
    return {
      userId: e.userId,
      orgId: "",
      ip: e.ip,
      details: { sessionId: e.sessionId, reusedGeneration: e.reusedGeneration },
    };
  }
  if (SessionRevoked.is(event)) {
    const e = SessionRevoked.decode(event.data);
    return {
      userId: e.userId,
      orgId: e.orgId,
      ip: "",
      details: { sessionId: e.sessionId, reason: e.reason, revokedBy: e.revokedBy },
    };
  }
  if (UserRolesChanged.is(event)) {
    const e = UserRolesChanged.decode(event.data);
    return {
      userId: e.userId,
      orgId: e.orgId,
      ip: "",
      details: { previousRoles: e.previousRoles, roles: e.roles },
    };
  }
  // Withdrawals: who did it is the event's actor; the password hash is never recorded.
  if (UserDisabled.is(event)) {
    const e = UserDisabled.decode(event.data);
    return { userId: e.userId, orgId: e.orgId, ip: "", details: { disabledBy: e.disabledBy } };
  }
  if (UserEnabled.is(event)) {
    const e = UserEnabled.decode(event.data);
    return { userId: e.userId, orgId: e.orgId, ip: "", details: { enabledBy: e.enabledBy } };
  }
  if (UserDeleted.is(event)) {
    const e = UserDeleted.decode(event.data);
    return { userId: e.userId, orgId: e.orgId, ip: "", details: { deletedBy: e.deletedBy } };
  }
  if (UserPasswordReset.is(event)) {
    const e = UserPasswordReset.decode(event.data);
    return { userId: e.userId, orgId: e.orgId, ip: "", details: { resetBy: e.resetBy } };
  }
  if (ServiceAccountDisabled.is(event)) {
    const e = ServiceAccountDisabled.decode(event.data);
    return {
      userId: "",
      orgId: e.orgId,
      ip: "",
      details: { serviceAccountId: e.serviceAccountId, disabledBy: e.disabledBy },
    };
  }
  if (ServiceAccountEnabled.is(event)) {
    const e = ServiceAccountEnabled.decode(event.data);
    return {
      userId: "",
      orgId: e.orgId,
      ip: "",
      details: { serviceAccountId: e.serviceAccountId, enabledBy: e.enabledBy },
    };
  }
  if (ServiceAccountDeleted.is(event)) {
    const e = ServiceAccountDeleted.decode(event.data);
    return {
      userId: "",
      orgId: e.orgId,
      ip: "",
      details: { serviceAccountId: e.serviceAccountId, deletedBy: e.deletedBy },
    };
  }
  if (ServiceAccountSecretRotated.is(event)) {
    const e = ServiceAccountSecretRotated.decode(event.data);
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
  if (SigningKeyActivated.is(event)) {
    const e = SigningKeyActivated.decode(event.data);
    return { userId: "", orgId: "", ip: "", details: { kid: e.kid, previousKid: e.previousKid } };
  }
  return undefined;
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
  apply: async (tx, event, { tables }) => {
    if (UserCreated.is(event)) {
      const e = UserCreated.decode(event.data);
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
    if (!found) return;
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
        event.streamSequence,
        event.index,
        storableText(event.eventId),
        storableText(event.type),
        event.time,
        orgId,
        userId,
        storableText(event.actor ?? ""),
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
