import {
  type CryptoKey,
  decodeProtectedHeader,
  type JWTPayload,
  errors as joseErrors,
  jwtVerify,
  type KeyObject,
} from "jose";
import { UnauthenticatedError, UnavailableError } from "../errors.js";
import type { Principal } from "./principal.js";
import { issuedNoLaterThan } from "./revocations.js";

/** The only signing algorithm accepted: pinned, never taken from the token. */
export const ACCESS_TOKEN_ALG = "EdDSA";
/** RFC 9068 access-token type; a refresh or ID token presented as an access token fails here. */
export const ACCESS_TOKEN_TYP = "at+jwt";
const MAX_TOKEN_LENGTH = 8 * 1024;

export interface KeySource {
  /** The verification key for a key id, refetching the key set when the id is unknown. */
  keyFor(kid: string): Promise<CryptoKey | KeyObject | undefined>;
  /**
   * Whether `kid` is in the current key set, from memory (no I/O: it is asked
   * on every cache hit). False also when the set is due to be read again, so
   * the caller verifies afresh through `keyFor`.
   */
  has(kid: string): boolean;
}

export interface RevocationChecker {
  isRevoked(sessionId: string): boolean;
  /** Tokens of this subject issued at or before this time (ms) are refused; undefined when none. */
  notBefore?(subject: string): number | undefined;
}

export interface VerifierOptions {
  keys: KeySource;
  issuer: string;
  /** This service's audience; a token for another audience is refused. */
  audience: string;
  revocations: RevocationChecker;
  /** Verified tokens kept (until they expire or their key leaves the key set). Default 10,000. */
  cacheSize?: number;
  /** Clock skew tolerated on exp/iat, seconds (default 5). */
  clockToleranceSec?: number;
}

/**
 * Verifies access tokens locally: pinned algorithm and type, required
 * iss/aud/exp/sub/jti, key by `kid` from the auth service's published keys;
 * then the revocation set, on every call (a cached token whose session is
 * revoked stops working at once). A cached token also stops verifying as soon
 * as its key leaves the key source's current set (a retired signing key).
 */
export class TokenVerifier {
  readonly #o: VerifierOptions;
  readonly #cache = new Map<string, Verified>();
  readonly #cacheSize: number;
  #hits = 0;
  #misses = 0;

  constructor(options: VerifierOptions) {
    this.#o = options;
    this.#cacheSize = options.cacheSize ?? 10_000;
  }

  /** Cache hit ratio since start (for the benchmark and metrics). */
  get cacheStats(): { hits: number; misses: number } {
    return { hits: this.#hits, misses: this.#misses };
  }

  async verify(token: string, nowMs = Date.now()): Promise<Principal> {
    const cached = this.#cache.get(token);
    let principal: Principal;
    // A hit needs the signing key still published: tokens of a retired key stop here, cached or not.
    if (cached && cached.principal.expiresAtMs > nowMs && this.#o.keys.has(cached.kid)) {
      this.#hits++;
      principal = cached.principal;
    } else {
      this.#misses++;
      if (cached) this.#cache.delete(token);
      const verified = await this.#verifySignature(token);
      this.#remember(token, verified);
      principal = verified.principal;
    }
    if (principal.sessionId !== undefined && this.#o.revocations.isRevoked(principal.sessionId)) {
      throw new UnauthenticatedError("token revoked");
    }
    // A withdrawn user or service account: every token issued up to the withdrawal, cached or not.
    const notBefore = this.#o.revocations.notBefore?.(principal.subject);
    if (notBefore !== undefined && issuedNoLaterThan(principal.issuedAtMs, notBefore)) {
      throw new UnauthenticatedError("token revoked");
    }
    return principal;
  }

  async #verifySignature(token: string): Promise<Verified> {
    if (token.length > MAX_TOKEN_LENGTH || token.split(".").length !== 3) {
      throw new UnauthenticatedError("malformed access token");
    }
    let kid: string | undefined;
    try {
      const header = decodeProtectedHeader(token);
      if (header.alg !== ACCESS_TOKEN_ALG)
        throw new UnauthenticatedError("access token algorithm not accepted");
      if (header.typ !== ACCESS_TOKEN_TYP) throw new UnauthenticatedError("not an access token");
      kid = header.kid;
    } catch (e) {
      if (e instanceof UnauthenticatedError) throw e;
      throw new UnauthenticatedError("malformed access token");
    }
    if (!kid) throw new UnauthenticatedError("access token has no key id");
    let key: CryptoKey | KeyObject | undefined;
    try {
      key = await this.#o.keys.keyFor(kid);
    } catch (e) {
      throw new UnavailableError("signing keys unavailable", { cause: e });
    }
    if (!key) throw new UnauthenticatedError("access token signed by an unknown key");
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, key, {
        algorithms: [ACCESS_TOKEN_ALG],
        typ: ACCESS_TOKEN_TYP,
        issuer: this.#o.issuer,
        audience: this.#o.audience,
        requiredClaims: ["exp", "iat", "sub", "jti", "org"],
        clockTolerance: this.#o.clockToleranceSec ?? 5,
      }));
    } catch (e) {
      if (e instanceof joseErrors.JWTExpired) throw new UnauthenticatedError("access token expired");
      throw new UnauthenticatedError("invalid access token");
    }
    return { principal: toPrincipal(payload), kid };
  }

  #remember(token: string, verified: Verified): void {
    if (this.#cache.size >= this.#cacheSize) {
      const oldest = this.#cache.keys().next().value;
      if (oldest !== undefined) this.#cache.delete(oldest);
    }
    this.#cache.set(token, verified);
  }
}

/** A verified token's principal and the key id it was verified with. */
interface Verified {
  principal: Principal;
  kid: string;
}

function toPrincipal(p: JWTPayload): Principal {
  const str = (v: unknown): string | undefined => (typeof v === "string" && v.length > 0 ? v : undefined);
  const roles = Array.isArray(p.roles) ? p.roles.filter((r): r is string => typeof r === "string") : [];
  const scopes = typeof p.scope === "string" ? p.scope.split(" ").filter(Boolean) : [];
  const subject = str(p.sub);
  const orgId = str(p.org);
  const tokenId = str(p.jti);
  if (!subject || !orgId || !tokenId || typeof p.exp !== "number") {
    throw new UnauthenticatedError("invalid access token");
  }
  const sessionId = str(p.sid);
  return {
    kind: sessionId ? "user" : "service",
    subject,
    sessionId,
    orgId,
    roles,
    scopes,
    tokenId,
    expiresAtMs: p.exp * 1000,
    issuedAtMs: typeof p.iat === "number" ? p.iat * 1000 : 0,
    issuer: p.iss ?? "",
    audience: typeof p.aud === "string" ? [p.aud] : (p.aud ?? []),
  };
}
