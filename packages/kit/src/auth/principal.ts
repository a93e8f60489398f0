/** Who is calling, as proven by a verified access token. Never built from request fields. */
export interface Principal {
  /** "user" for a user's session token, "service" for a client-credentials token. */
  kind: "user" | "service";
  /** `sub`: user id or service account id. */
  subject: string;
  /** `sid`: the session (refresh-token family) of a user token. */
  sessionId: string | undefined;
  /** `org`: every object the caller touches is scoped by it. */
  orgId: string;
  roles: readonly string[];
  scopes: readonly string[];
  /** `jti` */
  tokenId: string;
  /** `exp`, in milliseconds since the epoch. */
  expiresAtMs: number;
  /** `iat`, in milliseconds since the epoch. */
  issuedAtMs: number;
  /** `iss` and `aud`, for introspection. */
  issuer: string;
  audience: readonly string[];
}

/** Exact-equality checks: "bread" never satisfies "read". */
export function hasRole(principal: Principal, ...roles: string[]): boolean {
  return principal.roles.some((held) => roles.some((r) => r === held));
}

export function hasScope(principal: Principal, ...scopes: string[]): boolean {
  return principal.scopes.some((held) => scopes.some((s) => s === held));
}
