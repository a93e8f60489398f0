// FileService through gRPC against real NATS, PostgreSQL and Redis: uploads
// (dedupe, nothing left by failed or cancelled ones), reads, tenancy and
// roles, and the limits that refuse without changing anything.
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { aggregate } from "@spool/kit";
import { ListFilesRequest, ScanStatus } from "@spool/proto/spool/files/v1/files.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decideScan, FileAggregate } from "../src/domain/file.js";
import { createOrg, download, failure, type Org, upload } from "./fixtures.js";
import { call, type FilesStack, startFilesStack } from "./harness.js";

const infra = useInfra("files");
let stack: FilesStack;
let blobDir: string;
let a: Org;
let b: Org;

const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
const text = (n: number) =>
  Buffer.from(
    randomBytes(Math.ceil(n / 2))
      .toString("hex")
      .slice(0, n),
  );

async function blobCount(): Promise<number> {
  let n = 0;
  for await (const _ of stack.files.blobs.list()) n++;
  return n;
}
async function hasBlob(hash: string): Promise<boolean> {
  return (await stack.files.blobs.stat(hash)) !== undefined;
}
/** Files in the blob store's staging area (a failed upload must leave none). */
async function staged(): Promise<number> {
  return (await readdir(join(blobDir, "tmp")).catch(() => [])).length;
}
/** Every file of organisation A, whoever owns it, as its owner lists them (after the projection caught up). */
async function listed(token: string, minSequence?: bigint) {
  const c = stack.client;
  minSequence ??= BigInt(await stack.files.head());
  return (await call(
    c.listFiles,
    c,
    ListFilesRequest.fromPartial({ pageSize: 500, minSequence }),
    token,
  )) as {
    files: { fileId: string; sha256: string; displayName: string; scanStatus: ScanStatus }[];
    nextPageToken: string;
  };
}
/** A verdict, through the domain's own decision (the configured clamd is absent on purpose). */
async function markScanned(fileId: string, verdict: "clean" | "infected") {
  await aggregate(stack.files.files.store, FileAggregate).handle(fileId, (s) =>
    decideScan(s, {
      verdict,
      signature: verdict === "infected" ? "Eicar-Test-Signature" : "",
      scanner: "test",
      nowMs: Date.now(),
    }),
  );
}
const markClean = (fileId: string) => markScanned(fileId, "clean");

beforeAll(async () => {
  blobDir = await mkdtemp(join(tmpdir(), "spool-files-test-"));
  stack = await startFilesStack(infra(), blobDir, {
    SPOOL_UPLOAD_MAX_FILE_BYTES: String(1024 * 1024),
    SPOOL_UPLOAD_MAX_CHUNK_BYTES: String(64 * 1024),
    SPOOL_UPLOADS_PER_WINDOW: "1000",
    // clamd configured but not there: files stay PENDING (scanner unavailable is never a verdict);
    // the tests give verdicts themselves (markClean, markInfected).
    SPOOL_SCANNER: "clamd",
    SPOOL_CLAMD_SOCKET: join(blobDir, "no-clamd-here.sock"),
  });
  a = await createOrg(stack, "files-a");
  b = await createOrg(stack, "files-b");
});

afterAll(async () => {
  await stack?.stop();
  await rm(blobDir, { recursive: true, force: true });
});

describe("upload", () => {
  it("stores the bytes, records the file and serves them back once clean", async () => {
    const content = text(200_000);
    const r = await upload(
      stack.client,
      a.member.token,
      { displayName: "notes.txt", contentType: "text/plain" },
      content,
    );
    const f = r.file!;
    expect(f.sha256).toBe(sha(content));
    expect(f.sizeBytes).toBe(BigInt(content.length));
    expect(f.ownerId).toBe(a.member.userId);
    expect(f.orgId).toBe(a.orgId);
    expect(f.detectedContentType).toBe("text/plain");
    expect(f.scanStatus).toBe(ScanStatus.SCAN_STATUS_PENDING);
    expect(await hasBlob(f.sha256)).toBe(true);

    const pending = await failure(download(stack.client, a.member.token, f.fileId));
    expect(pending.code).toBe(status.FAILED_PRECONDITION);
    expect(pending.details).toMatch(/not been scanned/);

    await markClean(f.fileId);
    const got = await download(stack.client, a.member.token, f.fileId);
    expect(got.bytes.equals(content)).toBe(true);
    const part = await download(stack.client, a.member.token, f.fileId, { offset: 1000, length: 5000 });
    expect(part.bytes.equals(content.subarray(1000, 6000))).toBe(true);
    const tail = await download(stack.client, a.member.token, f.fileId, { offset: content.length - 10 });
    expect(tail.bytes.equals(content.subarray(content.length - 10))).toBe(true);
    const beyond = await failure(
      download(stack.client, a.member.token, f.fileId, { offset: content.length + 1 }),
    );
    expect(beyond.code).toBe(status.INVALID_ARGUMENT);
  });

  it("stores the same content once, uploaded twice and ten times in parallel", async () => {
    const content = text(50_000);
    const before = await blobCount();
    const one = await upload(stack.client, a.member.token, { displayName: "same.txt" }, content);
    const two = await upload(stack.client, a.owner.token, { displayName: "same again.txt" }, content);
    expect(one.file!.fileId).not.toBe(two.file!.fileId);
    expect(await blobCount()).toBe(before + 1);

    const parallel = text(300_000);
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        upload(stack.client, a.member.token, { displayName: `p${i}.txt` }, parallel, {
          chunkBytes: 16 * 1024,
        }),
      ),
    );
    expect(new Set(results.map((r) => r.file!.fileId)).size).toBe(10);
    expect(new Set(results.map((r) => r.file!.sha256))).toEqual(new Set([sha(parallel)]));
    expect(await blobCount()).toBe(before + 2);
    expect(await staged()).toBe(0);
  });

  it("leaves no blob and no record when the client cancels mid-stream", async () => {
    const content = text(600_000);
    const blobs = await blobCount();
    const head = await stack.files.head();
    const files = (await listed(a.owner.token)).files.length;
    const e = await failure(
      upload(stack.client, a.member.token, { displayName: "cut.txt" }, content, {
        chunkBytes: 32 * 1024,
        cancelAfterChunks: 5,
      }),
    );
    expect(e.code).toBe(status.CANCELLED);
    await eventually(async () => (await staged()) === 0, { what: "staging area empty" });
    expect(await hasBlob(sha(content))).toBe(false);
    expect(await blobCount()).toBe(blobs);
    expect(await stack.files.head()).toBe(head); // no event at all
    expect((await listed(a.owner.token)).files.length).toBe(files);
  });

  it("leaves nothing when the stream ends without `end` or errors mid-stream", async () => {
    const content = text(100_000);
    const blobs = await blobCount();
    const head = await stack.files.head();
    const files = (await listed(a.owner.token)).files.length;
    const noEnd = await failure(
      upload(stack.client, a.member.token, { displayName: "x.txt" }, content, { end: false }),
    );
    expect(noEnd.code).toBe(status.INVALID_ARGUMENT);
    expect(noEnd.details).toMatch(/end/);
    const twice = await failure(
      upload(stack.client, a.member.token, { displayName: "x.txt" }, content, {
        messages: [
          { part: { $case: "chunk", value: content.subarray(0, 1000) } },
          { part: { $case: "metadata", value: { displayName: "again", contentType: "", sha256: "" } } },
        ],
      }),
    );
    expect(twice.code).toBe(status.INVALID_ARGUMENT);
    const oversizeChunk = await failure(
      upload(stack.client, a.member.token, { displayName: "x.txt" }, content, {
        messages: [
          { part: { $case: "chunk", value: content.subarray(0, 1000) } },
          { part: { $case: "chunk", value: Buffer.alloc(64 * 1024 + 1, 97) } },
        ],
      }),
    );
    expect(oversizeChunk.code).toBe(status.INVALID_ARGUMENT);
    await eventually(async () => (await staged()) === 0, { what: "staging area empty" });
    expect(await blobCount()).toBe(blobs);
    expect(await stack.files.head()).toBe(head); // no event at all
    expect((await listed(a.owner.token)).files.length).toBe(files);
  });

  it("refuses bad uploads with INVALID_ARGUMENT or RESOURCE_EXHAUSTED and keeps nothing", async () => {
    const blobs = await blobCount();
    const head = await stack.files.head();
    const files = (await listed(a.owner.token)).files.length;
    const content = text(10_000);
    const cases: [string, () => Promise<unknown>, number, RegExp][] = [
      [
        "sha256 mismatch",
        () => upload(stack.client, a.member.token, { sha256: sha(Buffer.from("other")) }, content),
        status.INVALID_ARGUMENT,
        /SHA-256/,
      ],
      [
        "fewer bytes than announced",
        () => upload(stack.client, a.member.token, { sizeBytes: BigInt(content.length + 1) }, content),
        status.INVALID_ARGUMENT,
        /announced/,
      ],
      [
        "more bytes than announced",
        () => upload(stack.client, a.member.token, { sizeBytes: BigInt(content.length - 1) }, content),
        status.INVALID_ARGUMENT,
        /announced/,
      ],
      [
        "announced beyond the per-file limit",
        () => upload(stack.client, a.member.token, { sizeBytes: BigInt(2 * 1024 * 1024) }, content),
        status.INVALID_ARGUMENT,
        /size_bytes|limit/,
      ],
      [
        "streamed beyond the per-file limit",
        () => upload(stack.client, a.member.token, {}, text(1024 * 1024 + 1)),
        status.RESOURCE_EXHAUSTED,
        /limit/,
      ],
      [
        "declared type the bytes are not",
        () => upload(stack.client, a.member.token, { contentType: "image/png" }, content),
        status.INVALID_ARGUMENT,
        /image\/png/,
      ],
      [
        "a type outside the allow-list (an ELF executable)",
        () =>
          upload(
            stack.client,
            a.member.token,
            {},
            Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]), Buffer.alloc(200)]),
          ),
        status.INVALID_ARGUMENT,
        /not an allowed|not accepted/,
      ],
      [
        "a name with nothing visible left",
        () => upload(stack.client, a.member.token, { displayName: " .. " }, content),
        status.INVALID_ARGUMENT,
        /display_name|visible/,
      ],
    ];
    for (const [what, p, code, message] of cases) {
      const e = await failure(p()).catch((err: Error) => {
        throw new Error(`${what}: ${err.message}`);
      });
      expect({ what, code: e.code }).toEqual({ what, code });
      expect(e.details, what).toMatch(message);
      expect(e.details, what).not.toContain(blobDir);
    }
    await eventually(async () => (await staged()) === 0, { what: "staging area empty" });
    expect(await blobCount()).toBe(blobs);
    expect(await stack.files.head()).toBe(head); // no event at all
    expect((await listed(a.owner.token)).files.length).toBe(files);
  });

  it("keeps a file PENDING while the scanner is unavailable, and never serves an INFECTED one", async () => {
    const f = (await upload(stack.client, a.member.token, { displayName: "wait.txt" }, text(100))).file!;
    await new Promise((r) => setTimeout(r, 1500)); // the reactor has tried (and failed) to reach clamd
    const c = stack.client;
    expect((await call(c.getFile, c, { fileId: f.fileId }, a.member.token)).file!.scanStatus).toBe(
      ScanStatus.SCAN_STATUS_PENDING,
    );
    await markScanned(f.fileId, "infected");
    const got = (await call(c.getFile, c, { fileId: f.fileId }, a.member.token)).file!;
    expect(got.scanStatus).toBe(ScanStatus.SCAN_STATUS_INFECTED);
    expect(got.scanSignature).toBe("Eicar-Test-Signature");
    for (const token of [a.member.token, a.owner.token]) {
      const e = await failure(download(c, token, f.fileId));
      expect(e.code).toBe(status.FAILED_PRECONDITION);
      expect(e.details).toMatch(/quarantined/);
    }
    // A later verdict does not release it.
    await markClean(f.fileId);
    expect((await failure(download(c, a.member.token, f.fileId))).code).toBe(status.FAILED_PRECONDITION);
    const infected = (await call(
      c.listFiles,
      c,
      ListFilesRequest.fromPartial({
        scanStatus: ScanStatus.SCAN_STATUS_INFECTED,
        minSequence: BigInt(await stack.files.head()),
      }),
      a.member.token,
    )) as { files: { fileId: string; scanSignature: string }[] };
    expect(infected.files.map((x) => [x.fileId, x.scanSignature])).toEqual([
      [f.fileId, "Eicar-Test-Signature"],
    ]);
  });

  it("cleans the display name", async () => {
    const r = await upload(
      stack.client,
      a.member.token,
      { displayName: "  ..\\..//etc／passwd\u0301.txt " },
      text(10),
    );
    expect(r.file!.displayName).toBe(".._..__etc_passwd\u0301.txt".normalize("NFC"));
    expect(r.file!.displayName).not.toMatch(/[/\\]/);
  });
});

describe("tenancy and roles", () => {
  let fileOfMember: string;
  let fileOfMember2: string;
  beforeAll(async () => {
    fileOfMember = (await upload(stack.client, a.member.token, { displayName: "mine.txt" }, text(100))).file!
      .fileId;
    fileOfMember2 = (await upload(stack.client, a.member2.token, { displayName: "theirs.txt" }, text(100)))
      .file!.fileId;
    await markClean(fileOfMember);
    await markClean(fileOfMember2);
  });

  it("answers NOT_FOUND to another organisation on get, download and delete, and lists nothing of it", async () => {
    const c = stack.client;
    for (const token of [b.owner.token, b.admin.token, b.member.token]) {
      expect((await failure(call(c.getFile, c, { fileId: fileOfMember }, token))).code).toBe(
        status.NOT_FOUND,
      );
      expect((await failure(download(c, token, fileOfMember))).code).toBe(status.NOT_FOUND);
      expect((await failure(call(c.deleteFile, c, { fileId: fileOfMember }, token))).code).toBe(
        status.NOT_FOUND,
      );
      const page = await listed(token);
      expect(page.files.some((f) => f.fileId === fileOfMember)).toBe(false);
      const byOwner = (await call(
        c.listFiles,
        c,
        ListFilesRequest.fromPartial({ ownerId: a.member.userId }),
        token,
      )) as { files: unknown[] };
      expect(byOwner.files).toEqual([]);
    }
    // Still there for its owner.
    expect((await call(c.getFile, c, { fileId: fileOfMember }, a.member.token)).file!.fileId).toBe(
      fileOfMember,
    );
  });

  it("lets a member reach only its own files; owners and admins the organisation's", async () => {
    const c = stack.client;
    expect((await failure(call(c.getFile, c, { fileId: fileOfMember2 }, a.member.token))).code).toBe(
      status.NOT_FOUND,
    );
    expect((await failure(download(c, a.member.token, fileOfMember2))).code).toBe(status.NOT_FOUND);
    expect((await failure(call(c.deleteFile, c, { fileId: fileOfMember2 }, a.member.token))).code).toBe(
      status.NOT_FOUND,
    );
    const own = await listed(a.member.token);
    expect(own.files.some((f) => f.fileId === fileOfMember2)).toBe(false);
    expect(own.files.some((f) => f.fileId === fileOfMember)).toBe(true);
    const named = (await call(
      c.listFiles,
      c,
      ListFilesRequest.fromPartial({ ownerId: a.member2.userId }),
      a.member.token,
    )) as { files: unknown[] };
    expect(named.files).toEqual([]);

    for (const token of [a.owner.token, a.admin.token]) {
      expect((await call(c.getFile, c, { fileId: fileOfMember2 }, token)).file!.ownerId).toBe(
        a.member2.userId,
      );
      expect((await download(c, token, fileOfMember2)).bytes.length).toBe(100);
      const all = await listed(token);
      expect(all.files.some((f) => f.fileId === fileOfMember2)).toBe(true);
      const onlyMember2 = (await call(
        c.listFiles,
        c,
        ListFilesRequest.fromPartial({ ownerId: a.member2.userId }),
        token,
      )) as {
        files: { ownerId: string }[];
      };
      expect(onlyMember2.files.length).toBeGreaterThan(0);
      expect(onlyMember2.files.every((f) => f.ownerId === a.member2.userId)).toBe(true);
    }
  });

  it("refuses service accounts (PERMISSION_DENIED) and anonymous callers (UNAUTHENTICATED)", async () => {
    const c = stack.client;
    expect((await failure(call(c.getFile, c, { fileId: fileOfMember }, a.service.token))).code).toBe(
      status.PERMISSION_DENIED,
    );
    expect(
      (await failure(call(c.listFiles, c, ListFilesRequest.fromPartial({}), a.service.token))).code,
    ).toBe(status.PERMISSION_DENIED);
    expect((await failure(download(c, a.service.token, fileOfMember))).code).toBe(status.PERMISSION_DENIED);
    expect((await failure(upload(c, a.service.token, {}, text(10)))).code).toBe(status.PERMISSION_DENIED);
    expect((await failure(upload(c, undefined, {}, text(10)))).code).toBe(status.UNAUTHENTICATED);
    expect((await failure(call(c.getFile, c, { fileId: fileOfMember }))).code).toBe(status.UNAUTHENTICATED);
  });

  it("deletes softly: the file is NOT_FOUND afterwards, a second delete too, and the list drops it", async () => {
    const c = stack.client;
    const content = text(1000);
    const f = (await upload(c, a.member.token, { displayName: "gone.txt" }, content)).file!;
    const d = await call(c.deleteFile, c, { fileId: f.fileId }, a.admin.token);
    expect(d.fileId).toBe(f.fileId);
    expect((await failure(call(c.getFile, c, { fileId: f.fileId }, a.member.token))).code).toBe(
      status.NOT_FOUND,
    );
    expect((await failure(call(c.deleteFile, c, { fileId: f.fileId }, a.member.token))).code).toBe(
      status.NOT_FOUND,
    );
    const after = await listed(a.owner.token, d.sequence);
    expect(after.files.some((x) => x.fileId === f.fileId)).toBe(false);
    expect(await stack.files.readModel.isReferenced(f.sha256)).toBe(false);
  });

  it("refuses malformed ids and unknown ones alike with no data", async () => {
    const c = stack.client;
    expect((await failure(call(c.getFile, c, { fileId: "../../etc/passwd" }, a.owner.token))).code).toBe(
      status.INVALID_ARGUMENT,
    );
    expect(
      (await failure(call(c.getFile, c, { fileId: "00000000-0000-4000-8000-000000000000" }, a.owner.token)))
        .code,
    ).toBe(status.NOT_FOUND);
  });
});

describe("list", () => {
  it("pages with opaque tokens and filters independently", async () => {
    const c = stack.client;
    const org = await createOrg(stack, "files-list");
    const made: string[] = [];
    for (let i = 0; i < 5; i++)
      made.push(
        (await upload(c, org.member.token, { displayName: `report-${i}.txt` }, text(10 + i))).file!.fileId,
      );
    const png = await upload(
      c,
      org.member.token,
      { displayName: "pixel.png", contentType: "image/png" },
      Buffer.from(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
        "base64",
      ),
    );
    await markClean(made[0]!);
    const seq = png.sequence + 1n;
    const seen: string[] = [];
    let token = "";
    do {
      const page = (await call(
        c.listFiles,
        c,
        ListFilesRequest.fromPartial({ pageSize: 2, pageToken: token, minSequence: seq }),
        org.owner.token,
      )) as {
        files: { fileId: string }[];
        nextPageToken: string;
      };
      expect(page.files.length).toBeLessThanOrEqual(2);
      seen.push(...page.files.map((f) => f.fileId));
      token = page.nextPageToken;
    } while (token);
    expect(new Set(seen)).toEqual(new Set([...made, png.file!.fileId]));

    const byType = (await call(
      c.listFiles,
      c,
      ListFilesRequest.fromPartial({ contentType: "image/png" }),
      org.owner.token,
    )) as { files: { fileId: string }[] };
    expect(byType.files.map((f) => f.fileId)).toEqual([png.file!.fileId]);
    const byPrefix = (await call(
      c.listFiles,
      c,
      ListFilesRequest.fromPartial({ namePrefix: "report-" }),
      org.owner.token,
    )) as { files: unknown[] };
    expect(byPrefix.files.length).toBe(5);
    const clean = (await call(
      c.listFiles,
      c,
      ListFilesRequest.fromPartial({ scanStatus: ScanStatus.SCAN_STATUS_CLEAN }),
      org.owner.token,
    )) as {
      files: { fileId: string }[];
    };
    expect(clean.files.map((f) => f.fileId)).toEqual([made[0]]);
    const both = (await call(
      c.listFiles,
      c,
      ListFilesRequest.fromPartial({ namePrefix: "report-", scanStatus: ScanStatus.SCAN_STATUS_PENDING }),
      org.owner.token,
    )) as { files: unknown[] };
    expect(both.files.length).toBe(4);
    const bad = await failure(
      call(c.listFiles, c, ListFilesRequest.fromPartial({ pageToken: "not-a-token" }), org.owner.token),
    );
    expect(bad.code).toBe(status.INVALID_ARGUMENT);
  });
});
