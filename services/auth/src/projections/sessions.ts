import { defineProjection, type Sql, unreachable } from "@spool/kit";
import { AuthEvents, AuthStreams, Subjects } from "../domain/events.js";

const SessionsEvents = AuthEvents.pick("SessionStarted", "SessionRevoked");

/**
 * Sessions by user: which sessions are active (RevokeUserSessions and
 * ChangePassword revoke them all). Rebuildable from the AUTH stream.
 */
export const sessionsProjection = defineProjection({
  name: "auth_sessions",
  stream: AuthStreams.AUTH.name,
  filterSubject: Subjects.session.all,
  tables: ["auth_sessions"],
  migrate: async (tx, t) => {
    await tx.unsafe(`CREATE TABLE ${t.auth_sessions} (
      session_id text PRIMARY KEY,
      user_id text NOT NULL,
      org_id text NOT NULL,
      started_at timestamptz NOT NULL,
      absolute_expires_at timestamptz NOT NULL,
      revoked_at timestamptz,
      revoke_reason text
    )`);
    await tx.unsafe(`CREATE INDEX ON ${t.auth_sessions} (user_id) WHERE revoked_at IS NULL`);
  },
  events: SessionsEvents,
  apply: async (tx, event, { tables }) => {
    switch (event.type) {
      case "SessionStarted": {
        const e = event.data;
        await tx.unsafe(
          `INSERT INTO ${tables.auth_sessions} (session_id, user_id, org_id, started_at, absolute_expires_at)
         VALUES ($1, $2, $3, $4, to_timestamp($5::double precision / 1000))
         ON CONFLICT (session_id) DO NOTHING`,
          [e.sessionId, e.userId, e.orgId, event.meta.time, Number(e.absoluteExpiresAtMs)],
        );
        return;
      }
      case "SessionRevoked": {
        const e = event.data;
        await tx.unsafe(
          `UPDATE ${tables.auth_sessions} SET revoked_at = $2, revoke_reason = $3
         WHERE session_id = $1 AND revoked_at IS NULL`,
          [e.sessionId, event.meta.time, e.reason],
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

export class SessionsReadModel {
  readonly #sql: Sql;
  constructor(sql: Sql) {
    this.#sql = sql;
  }

  async activeSessions(userId: string): Promise<string[]> {
    const rows = await this.#sql<{ session_id: string }[]>`
      SELECT session_id FROM auth_sessions
      WHERE user_id = ${userId} AND revoked_at IS NULL AND absolute_expires_at > now()`;
    return rows.map((r) => r.session_id);
  }
}
