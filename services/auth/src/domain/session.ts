import { type EventOf, type NewEvent, type Reducer, unreachable } from "@spool/kit";
import { AuthEvents, RefreshTokenReused, RefreshTokenRotated, SessionRevoked, Subjects } from "./events.js";
import {
  hashRefreshToken,
  isFamilyMember,
  type RefreshTokenParts,
  safeEqual,
  successor,
} from "./refresh-token.js";

/** A session is one refresh-token family: one current token, rotated on every use. */
export type Session = { kind: "none" } | SessionData;

export interface SessionData {
  kind: "active" | "revoked";
  sessionId: string;
  userId: string;
  orgId: string;
  roles: string[];
  generation: number;
  tokenHash: Buffer;
  /** When the current token was issued (ms). */
  issuedAtMs: number;
  idleExpiresAtMs: number;
  absoluteExpiresAtMs: number;
  revokedReason: string | undefined;
}

/** The events of a session's subject. */
export const SessionEvents = AuthEvents.pick(
  "SessionStarted",
  "RefreshTokenRotated",
  "RefreshTokenReused",
  "SessionRevoked",
);
export type SessionEvent = EventOf<typeof SessionEvents>;

export const sessionReducer: Reducer<Session, SessionEvent> = {
  initial: () => ({ kind: "none" }),
  decode: SessionEvents.decode,
  evolve: (state, event) => evolveSession(state, event),
};

export const SessionAggregate = { subject: Subjects.session, reducer: sessionReducer };

export function evolveSession(state: Session, event: SessionEvent): Session {
  if (event.type === "SessionStarted") {
    const e = event.data;
    return {
      kind: "active",
      sessionId: e.sessionId,
      userId: e.userId,
      orgId: e.orgId,
      roles: e.roles,
      generation: 0,
      tokenHash: e.refreshTokenHash,
      issuedAtMs: event.meta.time.getTime(),
      idleExpiresAtMs: Number(e.idleExpiresAtMs),
      absoluteExpiresAtMs: Number(e.absoluteExpiresAtMs),
      revokedReason: undefined,
    };
  }
  if (state.kind === "none") return state;
  switch (event.type) {
    case "RefreshTokenRotated": {
      const e = event.data;
      return {
        ...state,
        generation: e.generation,
        tokenHash: e.tokenHash,
        issuedAtMs: event.meta.time.getTime(),
        idleExpiresAtMs: Number(e.idleExpiresAtMs),
      };
    }
    case "SessionRevoked":
      return { ...state, kind: "revoked", revokedReason: event.data.reason };
    // Recorded alongside the revocation that follows it; changes nothing by itself.
    case "RefreshTokenReused":
    case "unknown":
      return state;
    default:
      return unreachable(event);
  }
}

export interface RefreshPolicy {
  /** HMAC key deriving successor tokens. */
  refreshKey: Buffer;
  /** A repeat of the just-rotated token within this window gets the same successor (default 10 s). */
  graceMs: number;
  /** Idle lifetime: a token unused this long expires (default 30 days). */
  idleMs: number;
}

/** What a refresh decided; events (if any) are appended with optimistic concurrency. */
export type RefreshDecision =
  | { outcome: "rotated"; events: NewEvent[]; token: RefreshTokenParts; session: ActiveSession }
  | { outcome: "grace"; events: []; token: RefreshTokenParts; session: ActiveSession }
  | { outcome: "reused"; events: NewEvent[] }
  | { outcome: "rejected"; events: []; reason: "unknown" | "revoked" | "expired" };

type ActiveSession = SessionData;

/**
 * The refresh decision. Rotation moves the family to the next generation.
 * A token one generation behind, presented within the grace period after it
 * was rotated, gets the same successor (two tabs refreshing at once). Any
 * other earlier token of the family is reuse: the family is revoked. A token
 * that is not of the family (forged, garbage) changes nothing.
 */
export function decideRefresh(
  state: Session,
  presented: RefreshTokenParts,
  nowMs: number,
  policy: RefreshPolicy,
  ip: string,
): RefreshDecision {
  if (state.kind === "none") return { outcome: "rejected", events: [], reason: "unknown" };
  if (state.kind === "revoked") return { outcome: "rejected", events: [], reason: "revoked" };
  if (nowMs >= state.absoluteExpiresAtMs) return { outcome: "rejected", events: [], reason: "expired" };

  if (presented.generation === state.generation) {
    if (!safeEqual(hashRefreshToken(presented), state.tokenHash)) {
      return { outcome: "rejected", events: [], reason: "unknown" };
    }
    if (nowMs >= state.idleExpiresAtMs) return { outcome: "rejected", events: [], reason: "expired" };
    const next = successor(presented, policy.refreshKey);
    const idleExpiresAtMs = Math.min(nowMs + policy.idleMs, state.absoluteExpiresAtMs);
    return {
      outcome: "rotated",
      token: next,
      session: {
        ...state,
        generation: next.generation,
        tokenHash: hashRefreshToken(next),
        issuedAtMs: nowMs,
        idleExpiresAtMs,
      },
      events: [
        RefreshTokenRotated.create({
          sessionId: state.sessionId,
          generation: next.generation,
          previousTokenHash: toBuffer(state.tokenHash),
          tokenHash: hashRefreshToken(next),
          idleExpiresAtMs: BigInt(idleExpiresAtMs),
        }),
      ],
    };
  }

  if (!isFamilyMember(presented, state.generation, state.tokenHash, policy.refreshKey)) {
    return { outcome: "rejected", events: [], reason: "unknown" };
  }
  const justRotated =
    presented.generation === state.generation - 1 && nowMs - state.issuedAtMs <= policy.graceMs;
  if (justRotated) {
    return { outcome: "grace", events: [], token: successor(presented, policy.refreshKey), session: state };
  }
  return {
    outcome: "reused",
    events: [
      RefreshTokenReused.create({
        sessionId: state.sessionId,
        userId: state.userId,
        reusedGeneration: presented.generation,
        ip,
      }),
      SessionRevoked.create({
        sessionId: state.sessionId,
        userId: state.userId,
        orgId: state.orgId,
        reason: "reuse",
        revokedBy: "",
        absoluteExpiresAtMs: BigInt(state.absoluteExpiresAtMs),
      }),
    ],
  };
}

/** Revocation is idempotent: revoking a revoked (or unknown) session writes nothing. */
export function decideRevoke(state: Session, reason: string, revokedBy: string): NewEvent[] {
  if (state.kind !== "active") return [];
  return [
    SessionRevoked.create({
      sessionId: state.sessionId,
      userId: state.userId,
      orgId: state.orgId,
      reason,
      revokedBy,
      absoluteExpiresAtMs: BigInt(state.absoluteExpiresAtMs),
    }),
  ];
}

function toBuffer(b: Uint8Array): Buffer {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}
