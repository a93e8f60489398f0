import { randomUUID } from "node:crypto";
import { ACCESS_TOKEN_ALG, ACCESS_TOKEN_TYP } from "@spool/kit";
import { SignJWT } from "jose";
import type { KeyManager } from "./keys.js";

export interface AccessTokenClaims {
  subject: string;
  orgId: string;
  sessionId?: string;
  roles: readonly string[];
  scopes: readonly string[];
  /** Service-account tokens name their client. */
  clientId?: string;
}

/** Signs access tokens (RFC 9068 profile): EdDSA, typ at+jwt, iss, aud, sub, sid, jti, org, roles, scope, exp. */
export class AccessTokenIssuer {
  readonly #keys: KeyManager;
  readonly #issuer: string;
  readonly #audiences: string[];

  constructor(options: { keys: KeyManager; issuer: string; audiences: string[] }) {
    this.#keys = options.keys;
    this.#issuer = options.issuer;
    this.#audiences = options.audiences;
  }

  async issue(
    claims: AccessTokenClaims,
    ttlSeconds: number,
  ): Promise<{ token: string; expiresIn: number; jti: string }> {
    const { kid, privateKey } = await this.#keys.current();
    const jti = randomUUID();
    const token = await new SignJWT({
      org: claims.orgId,
      roles: [...claims.roles],
      scope: claims.scopes.join(" "),
      ...(claims.sessionId ? { sid: claims.sessionId } : {}),
      ...(claims.clientId ? { client_id: claims.clientId } : {}),
    })
      .setProtectedHeader({ alg: ACCESS_TOKEN_ALG, typ: ACCESS_TOKEN_TYP, kid })
      .setIssuer(this.#issuer)
      .setAudience(this.#audiences)
      .setSubject(claims.subject)
      .setJti(jti)
      .setIssuedAt()
      .setExpirationTime(`${ttlSeconds}s`)
      .sign(privateKey);
    return { token, expiresIn: ttlSeconds, jti };
  }
}
