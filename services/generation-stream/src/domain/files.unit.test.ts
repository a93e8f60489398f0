import type { Principal } from "@spool/kit";
import { describe, expect, it } from "vitest";
import { fileAccess, type KnownFile } from "./files.js";

const user = (subject: string, orgId: string, roles: string[] = ["member"]): Principal => ({
  kind: "user",
  subject,
  sessionId: "s",
  orgId,
  roles,
  scopes: [],
  tokenId: "t",
  expiresAtMs: 0,
  issuedAtMs: 0,
  issuer: "spool-auth",
  audience: ["spool.generation"],
});
const file = (over: Partial<KnownFile> = {}): KnownFile => ({
  orgId: "o1",
  ownerId: "u1",
  scan: "clean",
  deleted: false,
  ...over,
});

describe("which files a caller may attach", () => {
  it("the owner's clean file is usable; pending is told to those who may see it", () => {
    expect(fileAccess(user("u1", "o1"), file())).toBe("usable");
    expect(fileAccess(user("u1", "o1"), file({ scan: "pending" }))).toBe("pending");
    expect(fileAccess(user("boss", "o1", ["admin"]), file({ scan: "pending" }))).toBe("pending");
  });

  it("unknown, foreign, a colleague's, deleted and quarantined files all look the same: not found", () => {
    expect(fileAccess(user("u1", "o1"), undefined)).toBe("not_found");
    expect(fileAccess(user("u1", "o2", ["owner"]), file())).toBe("not_found");
    expect(fileAccess(user("u2", "o1"), file())).toBe("not_found");
    expect(fileAccess(user("u2", "o1"), file({ scan: "pending" }))).toBe("not_found");
    expect(fileAccess(user("u1", "o1"), file({ deleted: true }))).toBe("not_found");
    expect(fileAccess(user("u1", "o1"), file({ scan: "infected" }))).toBe("not_found");
    // Roles are matched exactly: "administrator" is not "admin".
    expect(fileAccess(user("u2", "o1", ["administrator"]), file())).toBe("not_found");
    expect(fileAccess({ ...user("u1", "o1"), kind: "service" }, file())).toBe("not_found");
  });

  it("an owner or admin of the organisation may use a colleague's clean file", () => {
    expect(fileAccess(user("boss", "o1", ["owner"]), file())).toBe("usable");
    expect(fileAccess(user("boss", "o1", ["admin"]), file())).toBe("usable");
  });
});
