// Generations and files (issue 10 follow-up): StartGeneration checks every
// file id against generation-stream's own projection of file-ingest's FILES
// events — no call to file-ingest. The events are appended here directly
// with the kit's event store, as file-ingest would write them.
import { type ServiceError, status } from "@grpc/grpc-js";
import { connectNats, EventStore, FileEvents, FilesStreams, Namespace, type NewEvent } from "@spool/kit";
import { Role } from "@spool/proto/spool/auth/v1/auth.js";
import { FileOrigin, ScanVerdict } from "@spool/proto/spool/files/v1/events.js";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authCall, call, type Stack, startRequest, startStack } from "./harness.js";

const infra = useInfra("genfiles");
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };
let stack: Stack;
let store: EventStore;
let closeNats: () => Promise<void>;

interface Caller {
  token: string;
  userId: string;
  orgId: string;
}

/** The caller's ids, as the service reads them from the verified token. */
function callerOf(token: string): Caller {
  const claims = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()) as {
    sub: string;
    org: string;
  };
  return { token, userId: claims.sub, orgId: claims.org };
}

let orgOwner: Caller; // owner of organisation A (the bootstrap admin's)
let member: Caller; // member of A
let colleague: Caller; // another member of A
let foreign: Caller; // owner of organisation B

beforeAll(async () => {
  const slice = infra();
  const nc = await connectNats({ url: slice.natsUrl, name: "files-test" });
  closeNats = () => nc.drain();
  store = new EventStore(nc, { namespace: new Namespace(slice.streamPrefix) });
  // file-ingest owns FILES; here the test stands in for it.
  await store.ensureStream(FilesStreams.FILES.definition());
  stack = await startStack(slice, {
    SPOOL_FILES_ENABLED: "true",
    SPOOL_MAX_FILE_IDS: "3",
    SPOOL_LIMIT_MAX_ACTIVE: "50",
  });
  const a = stack.auth.client;
  orgOwner = callerOf((await authCall(a.login, a, ADMIN)).tokens!.accessToken);
  const user = async (email: string, ownerToken: string) => {
    const password = "member password long";
    await authCall(
      a.createUser,
      a,
      { email, displayName: "M", password, roles: [Role.ROLE_MEMBER] },
      ownerToken,
    );
    return callerOf((await authCall(a.login, a, { email, password })).tokens!.accessToken);
  };
  member = await user("member@files.test", orgOwner.token);
  colleague = await user("colleague@files.test", orgOwner.token);
  const email = "owner@other.test";
  const password = "owner password long enough";
  await authCall(
    a.createOrganization,
    a,
    { name: "other", slug: "other", ownerEmail: email, ownerDisplayName: "O", ownerPassword: password },
    orgOwner.token,
  );
  foreign = callerOf((await authCall(a.login, a, { email, password })).tokens!.accessToken);
  expect(foreign.orgId).not.toBe(orgOwner.orgId);
});
afterAll(async () => {
  await stack?.stop();
  await closeNats?.();
});

let fileCount = 0;

/** Appends a file's FILES events as file-ingest would; returns its id. */
async function file(owner: Caller, life: ("clean" | "infected" | "deleted")[] = ["clean"]): Promise<string> {
  const fileId = `f${++fileCount}-${Date.now().toString(36)}`;
  const subject = FilesStreams.FILES.subjects.file(fileId);
  const { FileRecorded, FileScanned, FileDeleted } = FileEvents.types;
  await append(subject, [
    FileRecorded.create({
      fileId,
      orgId: owner.orgId,
      ownerId: owner.userId,
      displayName: "notes.txt",
      sizeBytes: 5n,
      sha256: "0".repeat(64),
      declaredContentType: "text/plain",
      detectedContentType: "text/plain",
      origin: FileOrigin.FILE_ORIGIN_UPLOAD,
      sourceUrl: "",
      archiveFileId: "",
      archivePath: "",
      recordedAtMs: BigInt(Date.now()),
    }),
  ]);
  for (const step of life) await append(subject, [lifeEvent(fileId, step)]);
  return fileId;

  function lifeEvent(id: string, step: "clean" | "infected" | "deleted"): NewEvent {
    if (step === "deleted")
      return FileDeleted.create({ fileId: id, deletedBy: owner.userId, deletedAtMs: 1n });
    return FileScanned.create({
      fileId: id,
      verdict: step === "clean" ? ScanVerdict.SCAN_VERDICT_CLEAN : ScanVerdict.SCAN_VERDICT_INFECTED,
      signature: step === "infected" ? "Eicar-Test-Signature" : "",
      scanner: "clamd",
      scannedAtMs: 1n,
    });
  }
}

async function append(subject: string, events: NewEvent[]): Promise<void> {
  await store.append(subject, events, { actor: "file-ingest-stand-in" });
}

let requestCount = 0;
const start = (caller: Caller, fileIds: string[], clientRequestId = `files-${++requestCount}`) =>
  call(
    stack.client.startGeneration,
    stack.client,
    startRequest(clientRequestId, "summarise the attached files", { fileIds }),
    caller.token,
  );

async function refusal(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  const err = (await p.then(
    () => {
      throw new Error("the start succeeded but was expected to fail");
    },
    (e: unknown) => e,
  )) as ServiceError;
  return { code: status[err.code], message: err.details };
}

describe("StartGeneration with file ids", () => {
  it("starts with the caller's own clean files, right after file-ingest recorded and scanned them", async () => {
    const ids = [await file(member), await file(member)];
    // No wait: the start lets the projection catch up to the FILES stream's head.
    const { created, generation } = await start(member, ids);
    expect(created).toBe(true);
    expect(generation?.status).toBeTruthy();
  });

  it("another organisation's file is NOT_FOUND, exactly like an unknown id, to a member and to an owner", async () => {
    const theirs = await file(foreign);
    const unknown = "f-never-recorded";
    for (const caller of [member, orgOwner]) {
      const foreignRefusal = await refusal(start(caller, [theirs]));
      const unknownRefusal = await refusal(start(caller, [unknown]));
      expect(foreignRefusal.code).toBe("NOT_FOUND");
      expect(unknownRefusal.code).toBe("NOT_FOUND");
      // Same words but for the id the caller sent: nothing tells the two apart.
      expect(foreignRefusal.message.replace(theirs, "<id>")).toBe(
        unknownRefusal.message.replace(unknown, "<id>"),
      );
    }
    // Its own organisation's owner may use it.
    expect((await start(foreign, [theirs])).created).toBe(true);
  });

  it("a deleted or quarantined file is NOT_FOUND, even to its owner", async () => {
    for (const life of [["clean", "deleted"], ["infected"], ["deleted"], ["infected", "clean"]] as const) {
      const id = await file(member, [...life]);
      expect(await refusal(start(member, [id])), life.join(",")).toMatchObject({ code: "NOT_FOUND" });
    }
  });

  it("a colleague's file is NOT_FOUND to a member, usable by an owner of the organisation", async () => {
    const id = await file(colleague);
    expect((await refusal(start(member, [id]))).code).toBe("NOT_FOUND");
    expect((await start(orgOwner, [id])).created).toBe(true);
  });

  it("the caller's own file still pending its scan is FAILED_PRECONDITION, and the refusal changed nothing", async () => {
    const id = await file(member, []);
    const refused = await refusal(start(member, [id], "pending-then-clean"));
    expect(refused.code).toBe("FAILED_PRECONDITION");
    expect(refused.message).toContain("scanned");
    // Someone else's pending file stays NOT_FOUND: pending says nothing about files one cannot see.
    expect((await refusal(start(colleague, [id]))).code).toBe("NOT_FOUND");
    await append(FilesStreams.FILES.subjects.file(id), [
      FileEvents.types.FileScanned.create({
        fileId: id,
        verdict: ScanVerdict.SCAN_VERDICT_CLEAN,
        signature: "",
        scanner: "clamd",
        scannedAtMs: 2n,
      }),
    ]);
    // The same client request id: nothing was stored by the refusal, so this creates it.
    expect((await start(member, [id], "pending-then-clean")).created).toBe(true);
  });

  it("one bad file among good ones refuses the whole start", async () => {
    const good = await file(member);
    const theirs = await file(foreign);
    expect((await refusal(start(member, [good, theirs], "mixed"))).code).toBe("NOT_FOUND");
    expect((await start(member, [good], "mixed")).created).toBe(true);
  });

  it("refuses duplicate file ids and more than SPOOL_MAX_FILE_IDS as INVALID_ARGUMENT on file_ids", async () => {
    const id = await file(member);
    expect((await refusal(start(member, [id, id]))).code).toBe("INVALID_ARGUMENT");
    const four = [await file(member), await file(member), await file(member), id];
    expect((await refusal(start(member, four))).code).toBe("INVALID_ARGUMENT");
  });
});
