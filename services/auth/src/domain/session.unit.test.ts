import { randomBytes } from "node:crypto";
import { deciderSpec, type GivenEvent } from "@spool/testing";
import { describe, expect, it } from "vitest";
import { SessionStarted } from "./events.js";
import {
  formatRefreshToken,
  hashRefreshToken,
  newRefreshSecret,
  parseRefreshToken,
  type RefreshTokenParts,
  successor,
} from "./refresh-token.js";
import { decideRefresh, decideRevoke, sessionReducer } from "./session.js";

const policy = { refreshKey: randomBytes(32), graceMs: 10_000, idleMs: 30 * 86_400_000 };
const T0 = 1_700_000_000_000;

const spec = deciderSpec(sessionReducer, { subject: "auth.session.s1", nowMs: T0 });

function started(first: RefreshTokenParts): GivenEvent {
  return {
    atMs: T0,
    event: SessionStarted.create({
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
  };
}

const rt0: RefreshTokenParts = { sessionId: "s1", generation: 0, secret: newRefreshSecret() };

describe("refresh rotation", () => {
  it("rotates the current token to its successor", () => {
    const d = spec
      .given(started(rt0))
      .when((s) => decideRefresh(s, rt0, T0 + 1000, policy, "ip"))
      .thenEvents({ type: "RefreshTokenRotated", data: { sessionId: "s1", generation: 1 } });
    expect(d.outcome).toBe("rotated");
    if (d.outcome !== "rotated") return;
    expect(d.token).toEqual(successor(rt0, policy.refreshKey));
  });

  it("a repeat of the just-rotated token inside the grace gets the same successor, writing nothing", () => {
    const rt1 = successor(rt0, policy.refreshKey);
    const rotated = decideRefresh(spec.given(started(rt0)).state, rt0, T0 + 1000, policy, "ip");
    const d = spec
      .given(started(rt0), { event: rotated.events[0]!, atMs: T0 + 1000 })
      .when((s) => decideRefresh(s, rt0, T0 + 5000, policy, "ip"))
      .thenNothing();
    expect(d).toMatchObject({ outcome: "grace", events: [] });
    if (d.outcome === "grace") expect(formatRefreshToken(d.token)).toBe(formatRefreshToken(rt1));
  });

  it("reuse after the grace revokes the family and records the reuse", () => {
    const rotated = decideRefresh(spec.given(started(rt0)).state, rt0, T0 + 1000, policy, "ip");
    const history = spec.given(started(rt0), { event: rotated.events[0]!, atMs: T0 + 1000 });
    const reuse = history.when((s) =>
      decideRefresh(s, rt0, T0 + 1000 + policy.graceMs + 1, policy, "203.0.113.9"),
    );
    const d = reuse.thenEvents(
      { type: "RefreshTokenReused", data: { sessionId: "s1", reusedGeneration: 0, ip: "203.0.113.9" } },
      { type: "SessionRevoked", data: { sessionId: "s1", reason: "reuse" } },
    );
    expect(d.outcome).toBe("reused");
    const revoked = reuse.state(T0 + 20_000);
    expect(revoked.kind).toBe("revoked");
    // The successor (RT2) stops working too.
    const rt1 = successor(rt0, policy.refreshKey);
    expect(decideRefresh(revoked, rt1, T0 + 21_000, policy, "ip")).toMatchObject({
      outcome: "rejected",
      reason: "revoked",
    });
  });

  it("an older generation (two behind) is reuse even inside the grace window", () => {
    let history = spec.given(started(rt0));
    let token = rt0;
    for (const at of [T0 + 1000, T0 + 2000]) {
      const d = decideRefresh(history.state, token, at, policy, "ip");
      if (d.outcome !== "rotated") throw new Error("expected rotation");
      history = history.given({ event: d.events[0]!, atMs: at });
      token = d.token;
    }
    const d = history
      .when((s) => decideRefresh(s, rt0, T0 + 2500, policy, "ip"))
      .thenEvents({ type: "RefreshTokenReused" }, { type: "SessionRevoked" });
    expect(d.outcome).toBe("reused");
  });

  it("a forged or garbage token changes nothing", () => {
    const history = spec.given(started(rt0));
    const forged = { ...rt0, secret: newRefreshSecret() };
    expect(history.when((s) => decideRefresh(s, forged, T0 + 1, policy, "ip")).thenNothing()).toMatchObject({
      outcome: "rejected",
      events: [],
    });
    const forgedOld = { sessionId: "s1", generation: 0, secret: newRefreshSecret() };
    const rotated = decideRefresh(history.state, rt0, T0 + 1000, policy, "ip");
    expect(
      history
        .given({ event: rotated.events[0]!, atMs: T0 + 1000 })
        .when((s) => decideRefresh(s, forgedOld, T0 + 60_000, policy, "ip"))
        .thenNothing(),
    ).toMatchObject({ outcome: "rejected" });
    expect(parseRefreshToken("garbage")).toBeUndefined();
    expect(parseRefreshToken(`${formatRefreshToken(rt0)}.extra`)).toBeUndefined();
    expect(parseRefreshToken(formatRefreshToken(rt0))).toEqual(rt0);
  });

  it("expired tokens are refused: idle and absolute lifetimes", () => {
    const history = spec.given(started(rt0));
    expect(
      history.when((s) => decideRefresh(s, rt0, T0 + policy.idleMs, policy, "ip")).thenNothing(),
    ).toMatchObject({ outcome: "rejected", reason: "expired" });
    expect(
      history.when((s) => decideRefresh(s, rt0, T0 + 90 * 86_400_000, policy, "ip")).thenNothing(),
    ).toMatchObject({ reason: "expired" });
  });

  it("revocation is idempotent", () => {
    const revoke = spec.given(started(rt0)).when((s) => decideRevoke(s, "logout", "u1"));
    revoke.thenEvents({
      type: "SessionRevoked",
      data: { sessionId: "s1", reason: "logout", revokedBy: "u1" },
    });
    const events = revoke.thenEvents({ type: "SessionRevoked" });
    spec
      .given(started(rt0), { event: events[0]!, atMs: T0 + 1 })
      .when((s) => decideRevoke(s, "logout", "u1"))
      .thenNothing();
  });

  it("an event type this version does not know is skipped, not a crash", () => {
    const history = spec.given(started(rt0));
    const unknown = { type: "spool.auth.v1.SessionRenamed", schemaVersion: 1, data: new Uint8Array([1, 2]) };
    expect(history.given(unknown).state).toEqual(history.state);
  });
});
