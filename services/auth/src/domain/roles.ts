import {
  ADMIN_SCOPE,
  INTROSPECT_SCOPE,
  OPERATOR_SCOPE,
  ORGANIZATION_SCOPES,
  type Principal,
} from "@spool/kit";

/** Organisation roles. Checks are by exact equality, never substring or prefix. */
export const ROLES = ["owner", "admin", "member"] as const;
export type RoleName = (typeof ROLES)[number];

export function isRole(value: string): value is RoleName {
  return (ROLES as readonly string[]).includes(value);
}

/** True when any held role equals one of the required roles exactly. */
export function hasAnyRole(held: readonly string[], required: readonly string[]): boolean {
  return held.some((h) => required.some((r) => h === r));
}

/** The scope catalogue lives in the kit (every service checks it); auth grants from it. */
export { INTROSPECT_SCOPE, OPERATOR_SCOPE };

/**
 * The scopes each organisation role holds for granting purposes (to its
 * organisation's service accounts). No role holds a platform scope.
 */
export const ROLE_SCOPES: Readonly<Record<RoleName, readonly string[]>> = {
  owner: ORGANIZATION_SCOPES,
  admin: ORGANIZATION_SCOPES,
  member: [],
};

/**
 * Scopes the caller may put on a service account: those its roles hold, plus
 * spool:admin for a platform operator (a user token with auth:operator, which
 * only operator users get). auth:operator itself is a user flag, never granted.
 */
export function grantableScopes(caller: Principal): ReadonlySet<string> {
  const out = new Set<string>();
  if (caller.kind !== "user") return out;
  for (const r of caller.roles) if (isRole(r)) for (const s of ROLE_SCOPES[r]) out.add(s);
  if (caller.scopes.some((s) => s === OPERATOR_SCOPE)) out.add(ADMIN_SCOPE);
  return out;
}
