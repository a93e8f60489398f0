// Which files a caller may attach to a generation, from what generation-stream
// knows of them (its FILES projection). Pure: the app reads, this decides.
import type { Principal } from "@spool/kit";

export interface KnownFile {
  orgId: string;
  ownerId: string;
  scan: "pending" | "clean" | "infected";
  deleted: boolean;
}

/**
 * - usable: the caller may attach it;
 * - pending: the caller may see it, but its scan has no verdict yet
 *   (FAILED_PRECONDITION: it is the caller's own, or its organisation's to an
 *   owner/admin, so saying it exists reveals nothing, and the client can retry);
 * - not_found: unknown, another organisation's, a colleague's (to a member),
 *   deleted or quarantined — indistinguishable, so ids reveal nothing.
 */
export type FileAccess = "usable" | "pending" | "not_found";

export function fileAccess(caller: Principal, file: KnownFile | undefined): FileAccess {
  if (file === undefined || file.deleted || file.orgId !== caller.orgId) return "not_found";
  const mayUse =
    caller.kind === "user" &&
    (file.ownerId === caller.subject || caller.roles.some((r) => r === "owner" || r === "admin"));
  if (!mayUse || file.scan === "infected") return "not_found";
  return file.scan === "clean" ? "usable" : "pending";
}
