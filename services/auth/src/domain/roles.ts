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

/** Scope granted to platform operators (the bootstrap admin). */
export const OPERATOR_SCOPE = "auth:operator";
/** Scope a service token needs to introspect tokens. */
export const INTROSPECT_SCOPE = "auth:introspect";
