import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { ConcurrencyError, type EventStore, FailedPreconditionError, type Principal } from "@spool/kit";
import { OAuthStateConsumed, Subjects } from "../domain/events.js";

/** What a purpose looks like (checked by the request rules, grpc/auth-service.ts). */
export const OAUTH_PURPOSE = /^[a-z0-9_-]{1,64}$/;
const INVALID = "invalid, expired or already used state";

/**
 * State values for third-party OAuth flows: `<nonce>.<expiresAtMs>.<mac>`,
 * the MAC (HMAC-SHA256) binding nonce and expiry to the user and purpose.
 * Consuming one appends the first event of its nonce's subject with expected
 * sequence 0, so it can be consumed once, atomically.
 */
export class OAuthStates {
  readonly #store: EventStore;
  readonly #key: Buffer;
  readonly #ttlMs: number;

  constructor(store: EventStore, tokenSecret: Buffer, ttlMs: number) {
    this.#store = store;
    this.#key = createHmac("sha256", tokenSecret).update("spool oauth-state").digest();
    this.#ttlMs = ttlMs;
  }

  #mac(nonce: string, expiresAtMs: number, userId: string, purpose: string): Buffer {
    return createHmac("sha256", this.#key).update(`${nonce}\n${expiresAtMs}\n${userId}\n${purpose}`).digest();
  }

  create(caller: Principal, purpose: string, nowMs = Date.now()): { state: string; expiresAtMs: number } {
    const nonce = randomBytes(18).toString("base64url");
    const expiresAtMs = nowMs + this.#ttlMs;
    const mac = this.#mac(nonce, expiresAtMs, caller.subject, purpose).toString("base64url");
    return { state: `${nonce}.${expiresAtMs}.${mac}`, expiresAtMs };
  }

  /** Fails the same way for a wrong user or purpose, an expired state, a forged one, or a second use. */
  async consume(caller: Principal, state: string, purpose: string, nowMs = Date.now()): Promise<void> {
    const [nonce, expires, mac, ...rest] = state.split(".");
    if (
      !nonce ||
      !expires ||
      !mac ||
      rest.length > 0 ||
      !/^[A-Za-z0-9_-]{24}$/.test(nonce) ||
      !/^\d{1,15}$/.test(expires)
    ) {
      throw new FailedPreconditionError(INVALID);
    }
    const expiresAtMs = Number(expires);
    const expected = this.#mac(nonce, expiresAtMs, caller.subject, purpose);
    const presented = Buffer.from(mac, "base64url");
    if (
      presented.length !== expected.length ||
      !timingSafeEqual(presented, expected) ||
      nowMs >= expiresAtMs
    ) {
      throw new FailedPreconditionError(INVALID);
    }
    try {
      await this.#store.append(
        Subjects.oauthState(nonce),
        [OAuthStateConsumed.create({ nonce, userId: caller.subject, purpose })],
        { expectedSequence: 0, actor: caller.subject },
      );
    } catch (e) {
      if (e instanceof ConcurrencyError) throw new FailedPreconditionError(INVALID);
      throw e;
    }
  }
}
