// Who may reach a file, decided on every call by file id: the caller's
// organisation must own it, and a member must own it too (owners and admins
// reach every file of their organisation). Everything else, deleted and
// unknown files included, is the same NOT_FOUND: an id says nothing about
// files the caller may not see.
import { hasRole, NotFoundError, type Principal } from "@spool/kit";
import type { ExistingFile, FileState } from "../domain/file.js";

/** Organisation roles that reach every file of their organisation. */
export const ORG_WIDE_ROLES = ["owner", "admin"] as const;

export function reachesWholeOrg(caller: Principal): boolean {
  return caller.kind === "user" && hasRole(caller, ...ORG_WIDE_ROLES);
}

export function fileNotFound(): NotFoundError {
  return new NotFoundError("file not found");
}

/** The live file if the caller may reach it; NOT_FOUND otherwise, alike for every reason. */
export function visibleFile(caller: Principal, state: FileState): ExistingFile {
  if (state.kind !== "active") throw fileNotFound();
  const r = state.record;
  if (r.orgId !== caller.orgId) throw fileNotFound();
  if (r.ownerId !== caller.subject && !reachesWholeOrg(caller)) throw fileNotFound();
  return state;
}
