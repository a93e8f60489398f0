/**
 * The catalogue of token scopes, in one place: the auth service grants only
 * these, and every service checks only these. See docs/SECURITY.md,
 * "Authorization model".
 *
 * Organisation scopes act inside the token's organisation only; an owner or
 * admin of the organisation may put them on the organisation's service
 * accounts. Platform scopes act across every organisation; no organisation
 * role can grant them.
 */

/** Platform operator. Only in user tokens of a user created with the operator flag (the bootstrap admin); never on a service account. */
export const OPERATOR_SCOPE = "auth:operator";
/** Platform admin service token: AdminService (projections, dead letters) of every service. Granted only by an operator. */
export const ADMIN_SCOPE = "spool:admin";

/** A service token that may introspect tokens of its own organisation. */
export const INTROSPECT_SCOPE = "auth:introspect";
/** A producer: claims and produces its organisation's generations. */
export const PRODUCE_SCOPE = "gen:produce";
/** A service token that may read and follow its organisation's generations. */
export const FOLLOW_SCOPE = "gen:follow";

export const ORGANIZATION_SCOPES: readonly string[] = [INTROSPECT_SCOPE, PRODUCE_SCOPE, FOLLOW_SCOPE];
export const PLATFORM_SCOPES: readonly string[] = [OPERATOR_SCOPE, ADMIN_SCOPE];

/** Exact equality, like every scope check. */
export function isPlatformScope(scope: string): boolean {
  return PLATFORM_SCOPES.some((s) => s === scope);
}

export function isKnownScope(scope: string): boolean {
  return isPlatformScope(scope) || ORGANIZATION_SCOPES.some((s) => s === scope);
}
