import { randomBytes } from "node:crypto";
import type { NewEvent, RecordedEvent } from "@spool/kit";
import { describe, expect, it } from "vitest";
import { RefreshTokenReused, RefreshTokenRotated, SessionRevoked, SessionStarted } from "./events.js";
import {
  formatRefreshToken,
  hashRefreshToken,
  newRefreshSecret,
  parseRefreshToken,
  type RefreshTokenParts,
  successor,
} from "./refresh-token.js";
import { decideRefresh, decideRevoke, evolveSession, type Session, sessionReducer } from "./session.js";

const policy = { refreshKey: randomBytes(32), graceMs: 10_000, idleMs: 30 * 86_400_000 };
const T0 = 1_700_000_000_000;

function recorded(e: NewEvent, atMs: number): RecordedEvent {
  return {
    stream: "AUTH",
    subject: "auth.session.s1",
    streamSequence: 1,
    index: 0,
    type: e.type,
    schemaVersion: e.schemaVersion,
    eventId: "e",
    data: e.data,
    time: new Date(atMs),
    correlationId: undefined,
    causationId: undefined,
    actor: undefined,
  };
}

function given(...events: [NewEvent, number][]): Session {
  return events.reduce((s, [e, at]) => evolveSession(s, recorded(e, at)), sessionReducer.initial());
}

function started(first: RefreshTokenParts): [NewEvent, number] {
  return [
    SessionStarted.create({
      sessionId: "s1",
      userId: "u1",
      orgId: "o1",
      roles: ["member"],
      refreshTokenHash: hashRefreshToken(first),
      idleExpiresAtMs: BigInt(T0 + policy.idleMs),
      absoluteExpiresAtMs: BigInt(T0 + 90 * 86_400_000),
      ip: "127.0.0.1",
      userAgent: "test",
    }),
    T0,
  ];
}

const rt0: RefreshTokenParts = { sessionId: "s1", generation: 0, secret: newRefreshSecret() };

describe("refresh rotation", () => {
  it("rotates the current token to its successor", () => {
    const d = decideRefresh(given(started(rt0)), rt0, T0 + 1000, policy, "ip");
    expect(d.outcome).toBe("rotated");
    if (d.outcome !== "rotated") return;
    expect(d.token).toEqual(successor(rt0, policy.refreshKey));
    expect(d.events.map((e) => e.type)).toEqual([RefreshTokenRotated.type]);
  });

  it("a repeat of the just-rotated token inside the grace gets the same successor, writing nothing", () => {
    const rt1 = successor(rt0, policy.refreshKey);
    const rotated = decideRefresh(given(started(rt0)), rt0, T0 + 1000, policy, "ip");
    const state = given(started(rt0), [rotated.events[0]!, T0 + 1000]);
    const d = decideRefresh(state, rt0, T0 + 5000, policy, "ip");
    expect(d).toMatchObject({ outcome: "grace", events: [] });
    if (d.outcome === "grace") expect(formatRefreshToken(d.token)).toBe(formatRefreshToken(rt1));
  });

  it("reuse after the grace revokes the family and records the reuse", () => {
    const rotated = decideRefresh(given(started(rt0)), rt0, T0 + 1000, policy, "ip");
    const state = given(started(rt0), [rotated.events[0]!, T0 + 1000]);
    const d = decideRefresh(state, rt0, T0 + 1000 + policy.graceMs + 1, policy, "203.0.113.9");
    expect(d.outcome).toBe("reused");
    expect(d.events.map((e) => e.type)).toEqual([RefreshTokenReused.type, SessionRevoked.type]);
    const revoked = d.events.reduce((s, e) => evolveSession(s, recorded(e, T0 + 20_000)), state);
    expect(revoked.kind).toBe("revoked");
    // The successor (RT2) stops working too.
    const rt1 = successor(rt0, policy.refreshKey);
    expect(decideRefresh(revoked, rt1, T0 + 21_000, policy, "ip")).toMatchObject({
      outcome: "rejected",
      reason: "revoked",
    });
  });

  it("an older generation (two behind) is reuse even inside the grace window", () => {
    let state = given(started(rt0));
    let token = rt0;
    for (const at of [T0 + 1000, T0 + 2000]) {
      const d = decideRefresh(state, token, at, policy, "ip");
      if (d.outcome !== "rotated") throw new Error("expected rotation");
      state = evolveSession(state, recorded(d.events[0]!, at));
      token = d.token;
    }
    expect(decideRefresh(state, rt0, T0 + 2500, policy, "ip").outcome).toBe("reused");
  });

  it("a forged or garbage token changes nothing", () => {
    const state = given(started(rt0));
    const forged = { ...rt0, secret: newRefreshSecret() };
    expect(decideRefresh(state, forged, T0 + 1, policy, "ip")).toMatchObject({
      outcome: "rejected",
      events: [],
    });
    const forgedOld = { sessionId: "s1", generation: 0, secret: newRefreshSecret() };
    const rotated = decideRefresh(state, rt0, T0 + 1000, policy, "ip");
    const after = evolveSession(state, recorded(rotated.events[0]!, T0 + 1000));
    expect(decideRefresh(after, forgedOld, T0 + 60_000, policy, "ip")).toMatchObject({ outcome: "rejected" });
    expect(parseRefreshToken("garbage")).toBeUndefined();
    expect(parseRefreshToken(`${formatRefreshToken(rt0)}.extra`)).toBeUndefined();
    expect(parseRefreshToken(formatRefreshToken(rt0))).toEqual(rt0);
  });

  it("expired tokens are refused: idle and absolute lifetimes", () => {
    const state = given(started(rt0));
    expect(decideRefresh(state, rt0, T0 + policy.idleMs, policy, "ip")).toMatchObject({
      outcome: "rejected",
      reason: "expired",
    });
    expect(decideRefresh(state, rt0, T0 + 90 * 86_400_000, policy, "ip")).toMatchObject({
      reason: "expired",
    });
  });

  it("revocation is idempotent", () => {
    const state = given(started(rt0));
    const events = decideRevoke(state, "logout", "u1");
    expect(events).toHaveLength(1);
    const revoked = evolveSession(state, recorded(events[0]!, T0 + 1));
    expect(decideRevoke(revoked, "logout", "u1")).toEqual([]);
  });
});
