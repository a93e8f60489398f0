import { UnauthenticatedError } from "../errors.js";
import type { Principal } from "./principal.js";
import { issuedNoLaterThan } from "./revocations.js";

/** What identifies a token to the revocation set: its session, its subject and when it was issued. */
export type WatchedToken = Pick<Principal, "sessionId" | "subject" | "issuedAtMs">;

/** Stops a watch; calling it twice is harmless. */
export type StopWatching = () => void;

interface Watch {
  token: WatchedToken;
  listener: () => void;
}

/**
 * Listeners keyed by session id and by subject, told when the revocation set
 * learns a revocation that covers their token: a long-lived call (a follow
 * stream) ends when its credentials are withdrawn, without polling the set.
 * Each listener is called at most once, then forgotten.
 */
export class RevocationWatchers {
  readonly #bySession = new Map<string, Set<Watch>>();
  readonly #bySubject = new Map<string, Set<Watch>>();

  /** Watches held (for tests and metrics). */
  get size(): number {
    let n = 0;
    for (const set of this.#bySubject.values()) n += set.size;
    return n;
  }

  add(token: WatchedToken, listener: () => void): StopWatching {
    const watch: Watch = { token, listener };
    // Every watch is keyed by subject (withdrawals); a user token's also by session (revocations).
    addTo(this.#bySubject, token.subject, watch);
    if (token.sessionId !== undefined) addTo(this.#bySession, token.sessionId, watch);
    return () => this.#remove(watch);
  }

  /** A session was revoked: every token carrying it. */
  sessionRevoked(sessionId: string): void {
    for (const watch of [...(this.#bySession.get(sessionId) ?? [])]) this.#fire(watch);
  }

  /** A subject was withdrawn at `notBeforeMs`: its tokens issued at or before then. */
  subjectWithdrawn(subject: string, notBeforeMs: number): void {
    for (const watch of [...(this.#bySubject.get(subject) ?? [])]) {
      if (issuedNoLaterThan(watch.token.issuedAtMs, notBeforeMs)) this.#fire(watch);
    }
  }

  #fire(watch: Watch): void {
    this.#remove(watch);
    watch.listener();
  }

  #remove(watch: Watch): void {
    removeFrom(this.#bySubject, watch.token.subject, watch);
    if (watch.token.sessionId !== undefined) removeFrom(this.#bySession, watch.token.sessionId, watch);
  }
}

function addTo(map: Map<string, Set<Watch>>, key: string, watch: Watch): void {
  const set = map.get(key);
  if (set) set.add(watch);
  else map.set(key, new Set([watch]));
}

function removeFrom(map: Map<string, Set<Watch>>, key: string, watch: Watch): void {
  const set = map.get(key);
  if (!set?.delete(watch)) return;
  if (set.size === 0) map.delete(key);
}

/** What credentialSignal needs of the revocation set (RevocationSet implements it). */
export interface RevocationSource {
  /**
   * Calls `listener` once when a revocation covering `token` is learned (at
   * once, asynchronously, when one already is). Returns how to stop watching.
   */
  watch(token: WatchedToken, listener: () => void): StopWatching;
}

export interface CredentialSignal {
  /** Aborted, with an UnauthenticatedError as its reason, when the credentials stop being valid. */
  signal: AbortSignal;
  /** Releases the watch and the expiry timer; call when the call ends. */
  dispose(): void;
}

/**
 * A signal for a long-lived call (a server stream) that aborts when the
 * caller's credentials stop being valid: its session is revoked or its
 * subject withdrawn (UnauthenticatedError "token revoked"), or its access
 * token expires (UnauthenticatedError "access token expired", at `exp`).
 * The caller resumes with a fresh token. Costs one watch and one timer.
 */
export function credentialSignal(
  principal: Pick<Principal, "sessionId" | "subject" | "issuedAtMs" | "expiresAtMs">,
  revocations: RevocationSource,
  now: () => number = Date.now,
): CredentialSignal {
  const controller = new AbortController();
  let stop: StopWatching = () => {};
  let timer: NodeJS.Timeout | undefined;
  const end = (error: UnauthenticatedError) => {
    if (controller.signal.aborted) return;
    dispose();
    controller.abort(error);
  };
  const dispose = () => {
    stop();
    if (timer) clearTimeout(timer);
    timer = undefined;
  };
  stop = revocations.watch(principal, () => end(new UnauthenticatedError("token revoked")));
  const expireIn = principal.expiresAtMs - now();
  const expire = () => end(new UnauthenticatedError("access token expired"));
  if (expireIn <= 0) {
    expire();
  } else {
    // setTimeout holds at most 2^31-1 ms (~24.8 days); access tokens live an hour at most.
    timer = setTimeout(expire, Math.min(expireIn, 2 ** 31 - 1));
    timer.unref();
  }
  return { signal: controller.signal, dispose };
}
