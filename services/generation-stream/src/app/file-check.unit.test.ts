import { FailedPreconditionError, NotFoundError, type Principal, UnavailableError } from "@spool/kit";
import { describe, expect, it } from "vitest";
import type { FileRow } from "../projections/files.js";
import { checkFiles, type FileCheckDeps } from "./file-check.js";

const caller: Principal = {
  kind: "user",
  subject: "u1",
  sessionId: "s",
  orgId: "o1",
  roles: ["member"],
  scopes: [],
  tokenId: "t",
  expiresAtMs: 0,
  issuedAtMs: 0,
  issuer: "spool-auth",
  audience: ["spool.generation"],
};
const row = (file_id: string, over: Partial<FileRow> = {}): FileRow => ({
  file_id,
  org_id: "o1",
  owner_id: "u1",
  scan: "clean",
  deleted: false,
  ...over,
});

/** A projection that holds `before` until it is waited for, then `after`. */
function projection(before: FileRow[], after: FileRow[], waitFails = false) {
  let caughtUp = false;
  const calls = { head: 0, waitFor: [] as number[] };
  const deps: FileCheckDeps = {
    read: async (orgId, ids) =>
      (caughtUp ? after : before).filter((r) => r.org_id === orgId && ids.includes(r.file_id)),
    head: async () => {
      calls.head++;
      return 42;
    },
    waitFor: async (sequence) => {
      calls.waitFor.push(sequence);
      if (waitFails) throw new Error("deadline exceeded");
      caughtUp = true;
    },
    catchUpMs: 100,
  };
  return { deps, calls };
}

describe("checking a start's files against the projection", () => {
  it("usable files pass without waiting for the projection", async () => {
    const { deps, calls } = projection([row("a"), row("b")], []);
    await checkFiles(deps, caller, ["a", "b"]);
    expect(calls).toEqual({ head: 0, waitFor: [] });
  });

  it("a file the projection has not seen yet is found once it caught up to the stream's head", async () => {
    const { deps, calls } = projection([], [row("a")]);
    await checkFiles(deps, caller, ["a"]);
    expect(calls.waitFor).toEqual([42]);
  });

  it("a projection that cannot catch up in time answers UNAVAILABLE, not a wrong NOT_FOUND", async () => {
    const { deps } = projection([], [row("a")], true);
    await expect(checkFiles(deps, caller, ["a"])).rejects.toBeInstanceOf(UnavailableError);
  });

  it("NOT_FOUND wins over pending; pending alone is FAILED_PRECONDITION", async () => {
    const rows = [row("p", { scan: "pending" }), row("x", { org_id: "o2" })];
    await expect(checkFiles(projection(rows, rows).deps, caller, ["p", "x"])).rejects.toBeInstanceOf(
      NotFoundError,
    );
    await expect(checkFiles(projection(rows, rows).deps, caller, ["p"])).rejects.toBeInstanceOf(
      FailedPreconditionError,
    );
  });
});
