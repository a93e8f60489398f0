// ImportUrl (through the kit's SSRF-safe client, against a local HTTP server)
// and ExpandArchive (file-archive's expander), through gRPC: each refusal is
// typed and records nothing; accepted content becomes files of the caller.
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { aggregate, readErrorDetails } from "@spool/kit";
import { ArchiveRefusal, ArchiveRefusalReason } from "@spool/proto/spool/files/v1/archive.js";
import { FileOrigin } from "@spool/proto/spool/files/v1/events.js";
import { ListFilesRequest } from "@spool/proto/spool/files/v1/files.js";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildZip, packTar, stored, yazlZip } from "../src/archive/fixtures.test.js";
import { decideScan, FileAggregate } from "../src/domain/file.js";
import { createOrg, download, failure, type Org, upload } from "./fixtures.js";
import { call, type FilesStack, startFilesStack } from "./harness.js";

const infra = useInfra("fimport");
let stack: FilesStack;
let blobDir: string;
let server: Server;
let port: number;
let org: Org;
const BODY = Buffer.from(randomBytes(20_000).toString("hex"));
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url?.startsWith("/file.txt")) return void res.end(BODY);
    if (req.url === "/big.txt") return void res.end(Buffer.alloc(300_000, 97));
    if (req.url === "/to-metadata") {
      res.writeHead(302, { location: "http://169.254.169.254/latest/meta-data/" });
      return void res.end();
    }
    res.writeHead(404);
    res.end("no");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
  blobDir = await mkdtemp(join(tmpdir(), "spool-files-import-"));
  stack = await startFilesStack(infra(), blobDir, {
    SPOOL_IMPORT_ALLOW_HTTP: "true",
    SPOOL_IMPORT_ALLOWED_PORTS: `443,80,${port}`,
    SPOOL_IMPORT_UNSAFE_ALLOWED_TARGETS: `127.0.0.1:${port}`,
    SPOOL_IMPORT_MAX_BYTES: "100000",
    SPOOL_IMPORT_MAX_REDIRECTS: "3",
    SPOOL_ARCHIVE_MAX_ENTRIES: "10",
    // clamd absent: files stay PENDING until the test gives a verdict; no scan event moves the stream.
    SPOOL_SCANNER: "clamd",
    SPOOL_CLAMD_SOCKET: join(blobDir, "no-clamd-here.sock"),
  });
  org = await createOrg(stack, "imports");
});

afterAll(async () => {
  await stack?.stop();
  server?.close();
  await rm(blobDir, { recursive: true, force: true });
});

async function markClean(fileId: string) {
  await aggregate(stack.files.files.store, FileAggregate).handle(fileId, (s) =>
    decideScan(s, { verdict: "clean", signature: "", scanner: "test", nowMs: Date.now() }),
  );
}
const importUrl = (url: string, token = org.member.token) =>
  call(stack.client.importUrl, stack.client, { url, displayName: "", contentType: "" }, token);

describe("ImportUrl", () => {
  it("imports a URL as a file of the caller, recorded without its query", async () => {
    const r = await importUrl(`http://127.0.0.1:${port}/file.txt?signature=secret`);
    const f = r.file!;
    expect(f.origin).toBe(FileOrigin.FILE_ORIGIN_URL);
    expect(f.sourceUrl).toBe(`http://127.0.0.1:${port}/file.txt`);
    expect(f.displayName).toBe("file.txt");
    expect(f.sha256).toBe(sha(BODY));
    expect(f.ownerId).toBe(org.member.userId);
    await markClean(f.fileId);
    expect((await download(stack.client, org.member.token, f.fileId)).bytes.equals(BODY)).toBe(true);
  });

  it("refuses SSRF targets and failing remotes with typed errors, recording nothing", async () => {
    const head = await stack.files.head();
    const cases: [string, number, RegExp][] = [
      ["http://169.254.169.254/latest/meta-data/", status.INVALID_ARGUMENT, /ADDRESS_BLOCKED/],
      [`http://[::ffff:127.0.0.1]:${port}/file.txt`, status.INVALID_ARGUMENT, /ADDRESS_BLOCKED/],
      ["http://2130706433/file.txt", status.INVALID_ARGUMENT, /ADDRESS_BLOCKED/],
      ["http://0x7f.1/file.txt", status.INVALID_ARGUMENT, /ADDRESS_BLOCKED/],
      ["file:///etc/passwd", status.INVALID_ARGUMENT, /SCHEME_NOT_ALLOWED/],
      [`http://127.0.0.1:${port + 1}/x`, status.INVALID_ARGUMENT, /PORT_NOT_ALLOWED/],
      [`http://user:pw@127.0.0.1:${port}/file.txt`, status.INVALID_ARGUMENT, /USERINFO/],
      [`http://127.0.0.1:${port}/to-metadata`, status.FAILED_PRECONDITION, /ADDRESS_BLOCKED/],
      [`http://127.0.0.1:${port}/missing`, status.FAILED_PRECONDITION, /404/],
      [`http://127.0.0.1:${port}/big.txt`, status.RESOURCE_EXHAUSTED, /limit/],
    ];
    for (const [url, code, message] of cases) {
      const e = await failure(importUrl(url)).catch((err: Error) => {
        throw new Error(`${url}: ${err.message}`);
      });
      expect({ url, code: e.code }).toEqual({ url, code });
      expect(e.details, url).toMatch(message);
    }
    expect(await stack.files.head()).toBe(head);
  });
});

describe("ExpandArchive", () => {
  async function uploadArchive(bytes: Buffer, name: string, contentType = "") {
    const r = await upload(stack.client, org.member.token, { displayName: name, contentType }, bytes);
    await markClean(r.file!.fileId);
    return r.file!.fileId;
  }
  const expand = (fileId: string, token = org.member.token) =>
    call(stack.client.expandArchive, stack.client, { fileId }, token);

  it("records each entry of a clean zip and tar.gz as a file of the caller", async () => {
    const zip = await yazlZip([
      { name: "docs/readme.txt", content: "hello" },
      { name: "docs/ünïcode/notes.txt", content: "notes" },
      { name: "top.txt", content: "top" },
    ]);
    const zipId = await uploadArchive(zip, "bundle.zip", "application/zip");
    const r = await expand(zipId);
    const byPath = new Map(r.files.map((f) => [f.archivePath, f]));
    expect([...byPath.keys()].sort()).toEqual(["docs/readme.txt", "docs/ünïcode/notes.txt", "top.txt"]);
    for (const f of r.files) {
      expect(f.origin).toBe(FileOrigin.FILE_ORIGIN_ARCHIVE);
      expect(f.archiveFileId).toBe(zipId);
      expect(f.ownerId).toBe(org.member.userId);
      expect(f.orgId).toBe(org.orgId);
      expect(f.displayName).not.toMatch(/\//);
    }
    expect(byPath.get("top.txt")!.sha256).toBe(sha(Buffer.from("top")));

    const tgz = (await import("node:zlib")).gzipSync(
      await packTar([
        { name: "a.txt", content: "aaa" },
        { name: "dir/b.txt", content: "bbb" },
      ]),
    );
    const tarId = await uploadArchive(tgz, "bundle.tar.gz");
    expect((await expand(tarId)).files.map((f) => f.archivePath).sort()).toEqual(["a.txt", "dir/b.txt"]);
  });

  it("refuses a traversal entry with an ArchiveRefusal detail and records nothing", async () => {
    const evil = buildZip([stored("../evil.txt", "x"), stored("ok.txt", "y")]);
    const id = await uploadArchive(evil, "evil.zip");
    const head = await stack.files.head();
    const e = await failure(expand(id));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    const [detail] = readErrorDetails(e.metadata).others.filter((d) =>
      d.typeUrl.endsWith("spool.files.v1.ArchiveRefusal"),
    );
    const refusal = ArchiveRefusal.decode(detail!.value);
    expect(refusal.reason).toBe(ArchiveRefusalReason.ARCHIVE_REFUSAL_REASON_PARENT_SEGMENT);
    expect(refusal.entry).toBe("../evil.txt");
    expect(await stack.files.head()).toBe(head);
    expect(e.details).not.toContain(blobDir);
  });

  it("refuses beyond the entry limit (FAILED_PRECONDITION), a pending archive, another organisation's, and a member's colleague's", async () => {
    const many = await yazlZip(Array.from({ length: 11 }, (_, i) => ({ name: `f${i}.txt`, content: "x" })));
    const id = await uploadArchive(many, "many.zip");
    const e = await failure(expand(id));
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    const [detail] = readErrorDetails(e.metadata).others;
    expect(ArchiveRefusal.decode(detail!.value).reason).toBe(
      ArchiveRefusalReason.ARCHIVE_REFUSAL_REASON_TOO_MANY_ENTRIES,
    );

    const pending = (
      await upload(
        stack.client,
        org.member.token,
        { displayName: "p.zip" },
        await yazlZip([{ name: "a", content: "a" }]),
      )
    ).file!;
    expect((await failure(expand(pending.fileId))).code).toBe(status.FAILED_PRECONDITION);

    const other = await createOrg(stack, "imports-other");
    expect((await failure(expand(id, other.owner.token))).code).toBe(status.NOT_FOUND);
    expect((await failure(expand(id, org.member2.token))).code).toBe(status.NOT_FOUND);
    const listed = await call(
      stack.client.listFiles,
      stack.client,
      ListFilesRequest.fromPartial({}),
      other.owner.token,
    );
    expect(listed.files).toEqual([]);
  });
});
