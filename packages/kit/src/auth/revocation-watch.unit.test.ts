import { afterEach, describe, expect, it, vi } from "vitest";
import { UnauthenticatedError } from "../errors.js";
import { credentialSignal, RevocationWatchers, type WatchedToken } from "./revocation-watch.js";

const user = (sessionId: string, issuedAtMs = 10_000): WatchedToken => ({
  sessionId,
  subject: "u1",
  issuedAtMs,
});

describe("RevocationWatchers", () => {
  it("tells the watchers of a revoked session, once, and no one else", () => {
    const w = new RevocationWatchers();
    const calls: string[] = [];
    w.add(user("s1"), () => calls.push("a"));
    w.add(user("s1"), () => calls.push("b"));
    w.add(user("s2"), () => calls.push("other session"));
    w.sessionRevoked("s1");
    w.sessionRevoked("s1");
    expect(calls).toEqual(["a", "b"]);
    expect(w.size).toBe(1);
  });

  it("a withdrawn subject ends its tokens issued up to the withdrawal, user or service", () => {
    const w = new RevocationWatchers();
    const calls: string[] = [];
    w.add(user("s1", 10_000), () => calls.push("old"));
    w.add(user("s2", 20_000), () => calls.push("newer"));
    w.add({ sessionId: undefined, subject: "sa1", issuedAtMs: 10_000 }, () => calls.push("service"));
    w.add({ sessionId: undefined, subject: "u2", issuedAtMs: 10_000 }, () => calls.push("another subject"));
    w.subjectWithdrawn("u1", 15_000);
    w.subjectWithdrawn("sa1", 10_500); // same second as iat: covered
    expect(calls).toEqual(["old", "service"]);
    w.subjectWithdrawn("u1", 20_000);
    expect(calls).toEqual(["old", "service", "newer"]);
    expect(w.size).toBe(1);
  });

  it("a stopped watch is never called and leaves nothing behind", () => {
    const w = new RevocationWatchers();
    const listener = vi.fn();
    const stop = w.add(user("s1"), listener);
    stop();
    stop();
    w.sessionRevoked("s1");
    w.subjectWithdrawn("u1", 99_000);
    expect(listener).not.toHaveBeenCalled();
    expect(w.size).toBe(0);
  });
});

describe("credentialSignal", () => {
  afterEach(() => vi.useRealTimers());

  function source() {
    const watchers = new RevocationWatchers();
    return { watchers, watch: watchers.add.bind(watchers) };
  }

  it("aborts with UNAUTHENTICATED 'token revoked' when the session is revoked", () => {
    const s = source();
    const c = credentialSignal({ ...user("s1"), expiresAtMs: Date.now() + 60_000 }, s);
    expect(c.signal.aborted).toBe(false);
    s.watchers.sessionRevoked("s1");
    expect(c.signal.aborted).toBe(true);
    expect(c.signal.reason).toBeInstanceOf(UnauthenticatedError);
    expect((c.signal.reason as Error).message).toBe("token revoked");
    expect(s.watchers.size).toBe(0);
  });

  it("aborts with 'access token expired' at exp, not before", () => {
    vi.useFakeTimers();
    const s = source();
    const c = credentialSignal({ ...user("s1"), expiresAtMs: Date.now() + 5_000 }, s);
    vi.advanceTimersByTime(4_999);
    expect(c.signal.aborted).toBe(false);
    vi.advanceTimersByTime(1);
    expect(c.signal.aborted).toBe(true);
    expect((c.signal.reason as Error).message).toBe("access token expired");
    expect(s.watchers.size).toBe(0);
  });

  it("a token already expired aborts at once; dispose releases the watch and the timer", () => {
    vi.useFakeTimers();
    const s = source();
    expect(credentialSignal({ ...user("s1"), expiresAtMs: Date.now() - 1 }, s).signal.aborted).toBe(true);
    const c = credentialSignal({ ...user("s2"), expiresAtMs: Date.now() + 1_000 }, s);
    c.dispose();
    expect(s.watchers.size).toBe(0);
    vi.advanceTimersByTime(2_000);
    s.watchers.sessionRevoked("s2");
    expect(c.signal.aborted).toBe(false);
  });
});
