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

/** The only signing algorithm accepted: pinned, never taken from the token. */
export const ACCESS_TOKEN_ALG = "EdDSA";
/** RFC 9068 access-token type; a refresh or ID token presented as an access token fails here. */
export const ACCESS_TOKEN_TYP = "at+jwt";
const MAX_TOKEN_LENGTH = 8 * 1024;

export interface KeySource {
  /** The verification key for a key id, refetching the key set when the id is unknown. */
  keyFor(kid: string): Promise<CryptoKey | KeyObject | undefined>;
}

export interface RevocationChecker {
  isRevoked(sessionId: string): boolean;
}

export interface VerifierOptions {
  keys: KeySource;
  issuer: string;
  /** This service's audience; a token for another audience is refused. */
  audience: string;
  revocations: RevocationChecker;
  /** Verified tokens kept (until they expire). Default 10,000. */
  cacheSize?: number;
  /** Clock skew tolerated on exp/iat, seconds (default 5). */
  clockToleranceSec?: number;
}

/**
 * Verifies access tokens locally: pinned algorithm and type, required
 * iss/aud/exp/sub/jti, key by `kid` from the auth service's published keys;
 * then the revocation set, on every call (a cached token whose session is
 * revoked stops working at once).
 */
export class TokenVerifier {
  readonly #o: VerifierOptions;
  readonly #cache = new Map<string, Principal>();
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
    if (cached && cached.expiresAtMs > nowMs) {
      this.#hits++;
      principal = cached;
    } else {
      this.#misses++;
      if (cached) this.#cache.delete(token);
      principal = await this.#verifySignature(token);
      this.#remember(token, principal);
    }
    if (principal.sessionId !== undefined && this.#o.revocations.isRevoked(principal.sessionId)) {
      throw new UnauthenticatedError("token revoked");
    }
    return principal;
  }

  async #verifySignature(token: string): Promise<Principal> {
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
    return toPrincipal(payload);
  }

  #remember(token: string, principal: Principal): void {
    if (this.#cache.size >= this.#cacheSize) {
      const oldest = this.#cache.keys().next().value;
      if (oldest !== undefined) this.#cache.delete(oldest);
    }
    this.#cache.set(token, principal);
  }
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
