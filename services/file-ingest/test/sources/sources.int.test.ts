// SourceService end to end: file-ingest and auth on the test servers, git
// repositories served over HTTPS by git http-backend (test CA passed through
// SPOOL_SOURCE_CA_FILE), snapshots stored in the filesystem blob store.

import { createHash, randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { credentials, type ServiceError, status } from "@grpc/grpc-js";
import { Role } from "@spool/proto/spool/auth/v1/auth.js";
import {
  ChangeKind,
  type Snapshot,
  SourceKind,
  SourceServiceClient,
} from "@spool/proto/spool/files/v1/sources.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { collectBlobs } from "../../src/blobs/blob-collector.js";
import { authCall, call, codeOf, type FilesStack, startFilesStack } from "../harness.js";
import { type GitHttpsServer, startGitHttpsServer } from "./git-server.js";
import { startTarballServer, type TarballServer } from "./tarball-server.js";
import { makeTestCerts } from "./tls.js";

const infra = useInfra("sources");
let stack: FilesStack;
let sources: SourceServiceClient;
let git: GitHttpsServer;
let badTls: GitHttpsServer;
let tarballs: TarballServer;
const tokens = { ownerA: "", adminA: "", memberA: "", ownerB: "" };
const OPERATOR = { email: "admin@spool.test", password: "correct horse battery staple 42" };
const KEEP = 2;

async function login(email: string, password: string): Promise<string> {
  const c = stack.auth.client;
  return (await authCall(c.login, c, { email, password })).tokens!.accessToken;
}

async function register(name: string, token = tokens.ownerA, ref = "main", server = git) {
  const r = await call(
    sources.registerSource,
    sources,
    { displayName: name, kind: SourceKind.SOURCE_KIND_GIT, url: server.url(name, "127.0.0.1"), gitRef: ref },
    token,
  );
  return r.source!.sourceId;
}

const snap = (sourceId: string, token = tokens.ownerA) =>
  call(sources.takeSnapshot, sources, { sourceId }, token, 60_000);

async function reasonOf(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  const e = (await p.then(
    () => undefined,
    (error: unknown) => error,
  )) as ServiceError | undefined;
  expect(e, "the call should have failed").toBeDefined();
  return { code: e!.code, message: e!.details };
}

beforeAll(async () => {
  const certs = makeTestCerts(["localhost"], ["127.0.0.1"]);
  git = await startGitHttpsServer(certs);
  badTls = await startGitHttpsServer({ key: certs.selfSignedKey, cert: certs.selfSignedCert });
  tarballs = await startTarballServer(certs);
  stack = await startFilesStack(infra(), mkdtempSync(join(tmpdir(), "spool-sources-blobs-")), {
    SPOOL_SOURCE_KEEP_SNAPSHOTS: String(KEEP),
    SPOOL_SOURCE_ALLOWED_PORTS: `443,${git.port},${badTls.port},${tarballs.port}`,
    SPOOL_SOURCE_UNSAFE_ALLOWED_TARGETS: [git.port, badTls.port, tarballs.port]
      .map((p) => `127.0.0.1:${p}`)
      .join(","),
    SPOOL_SOURCE_CA_FILE: certs.caFile,
  });
  sources = new SourceServiceClient(`127.0.0.1:${stack.files.port}`, credentials.createInsecure());
  const c = stack.auth.client;
  const operator = await login(OPERATOR.email, OPERATOR.password);
  for (const slug of ["src-a", "src-b"]) {
    await authCall(
      c.createOrganization,
      c,
      {
        name: slug,
        slug,
        ownerEmail: `owner@${slug}.test`,
        ownerDisplayName: "O",
        ownerPassword: "owner password long enough",
      },
      operator,
    );
  }
  tokens.ownerA = await login("owner@src-a.test", "owner password long enough");
  tokens.ownerB = await login("owner@src-b.test", "owner password long enough");
  for (const [email, role] of [
    ["admin@src-a.test", Role.ROLE_ADMIN],
    ["member@src-a.test", Role.ROLE_MEMBER],
  ] as const) {
    await authCall(
      c.createUser,
      c,
      { email, displayName: "U", password: "user password long enough", roles: [role] },
      tokens.ownerA,
    );
  }
  tokens.adminA = await login("admin@src-a.test", "user password long enough");
  tokens.memberA = await login("member@src-a.test", "user password long enough");
}, 120_000);

afterAll(async () => {
  sources?.close();
  await stack?.stop();
  await git?.close();
  await badTls?.close();
  await tarballs?.close();
});

describe("snapshots and refs", () => {
  it("gives the same ref to an unchanged source and to another source with the same content; one byte changes it", async () => {
    const files = { "README.md": "# one\n", "src/a.ts": "export const a = 1;\n" };
    git.commit("same-1", files);
    git.commit("same-2", files);
    const one = await register("same-1");
    const two = await register("same-2");
    const first = (await snap(one)).snapshot!;
    const again = (await snap(one)).snapshot!;
    const other = (await snap(two)).snapshot!;
    expect(first.number).toBe(1);
    expect(again.number).toBe(2);
    expect(again.ref).toBe(first.ref);
    expect(other.ref).toBe(first.ref);
    expect(first.fileCount).toBe(2);
    expect(first.commit).toMatch(/^[0-9a-f]{40}$/);
    git.commit("same-2", { ...files, "src/a.ts": "export const a = 2;\n" });
    const changed = (await snap(two)).snapshot!;
    expect(changed.ref).not.toBe(first.ref);
  });

  it("a tarball source with the same files as a git source has the same ref", async () => {
    const files = { "README.md": "# both\n", "lib/x.js": "module.exports = 1;\n" };
    git.commit("both", files);
    tarballs.tarball("/both.tar.gz", files);
    const gitId = await register("both");
    const tarId = (
      await call(
        sources.registerSource,
        sources,
        {
          displayName: "both",
          kind: SourceKind.SOURCE_KIND_TARBALL,
          url: tarballs.url("/both.tar.gz"),
          gitRef: "",
        },
        tokens.ownerA,
      )
    ).source!.sourceId;
    const fromGit = (await snap(gitId)).snapshot!;
    const fromTar = (await snap(tarId)).snapshot!;
    expect(fromTar.ref).toBe(fromGit.ref);
    expect(fromTar.fileCount).toBe(2);
  });

  it("diffs two refs exactly, and an unknown earlier ref lists everything as added", async () => {
    git.commit("diffed", { keep: "same", mod: "v1", gone: "bye", "dir/resized": "ab" });
    const id = await register("diffed");
    const before = (await snap(id)).snapshot!;
    git.commit("diffed", { keep: "same", mod: "v2", "new/file": "hi", "dir/resized": "abc" });
    const after = (await snap(id)).snapshot!;
    const diff = await call(
      sources.diffSnapshots,
      sources,
      { sourceId: id, fromRef: before.ref, toRef: after.ref, pageSize: 0, pageToken: "" },
      tokens.memberA,
    );
    expect(diff.fromKnown).toBe(true);
    expect(diff.changes.map((c) => [ChangeKind[c.kind], c.entry!.path])).toEqual([
      ["CHANGE_KIND_MODIFIED", "dir/resized"],
      ["CHANGE_KIND_REMOVED", "gone"],
      ["CHANGE_KIND_MODIFIED", "mod"],
      ["CHANGE_KIND_ADDED", "new/file"],
    ]);
    expect([diff.added, diff.modified, diff.removed]).toEqual([1, 2, 1]);
    // Paged, the same changes in the same order.
    const first = await call(
      sources.diffSnapshots,
      sources,
      { sourceId: id, fromRef: before.ref, toRef: after.ref, pageSize: 3, pageToken: "" },
      tokens.memberA,
    );
    const rest = await call(
      sources.diffSnapshots,
      sources,
      { sourceId: id, fromRef: before.ref, toRef: after.ref, pageSize: 3, pageToken: first.nextPageToken },
      tokens.memberA,
    );
    expect([...first.changes, ...rest.changes]).toEqual(diff.changes);
    expect(rest.nextPageToken).toBe("");
    for (const fromRef of ["", "f".repeat(64)]) {
      const all = await call(
        sources.diffSnapshots,
        sources,
        { sourceId: id, fromRef, toRef: after.ref, pageSize: 0, pageToken: "" },
        tokens.memberA,
      );
      expect(all.fromKnown).toBe(false);
      expect(all.changes.every((c) => c.kind === ChangeKind.CHANGE_KIND_ADDED)).toBe(true);
      expect(all.changes.map((c) => c.entry!.path)).toEqual(["dir/resized", "keep", "mod", "new/file"]);
    }
    // The manifest, paged, sorted by path bytes.
    const m1 = await call(
      sources.getSnapshot,
      sources,
      { sourceId: id, number: 2, pageSize: 2, pageToken: "" },
      tokens.memberA,
    );
    const m2 = await call(
      sources.getSnapshot,
      sources,
      { sourceId: id, number: 2, pageSize: 2, pageToken: m1.nextPageToken },
      tokens.memberA,
    );
    expect([...m1.entries, ...m2.entries].map((e) => e.path)).toEqual([
      "dir/resized",
      "keep",
      "mod",
      "new/file",
    ]);
    expect(m1.entries[0]!.sizeBytes).toBe(3n);
  });
});

describe("retention and pins", () => {
  it(`keeps the last ${KEEP} materialised, never prunes a pinned snapshot, prunes it when unpinned; manifests stay for diffs`, async () => {
    git.commit("kept", { v: "1" });
    const id = await register("kept");
    const s1 = (await snap(id)).snapshot!;
    await call(
      sources.pinSnapshot,
      sources,
      { sourceId: id, number: 1, holder: "generation:g1" },
      tokens.memberA,
    );
    const taken: Snapshot[] = [];
    for (let i = 2; i <= 4; i++) {
      git.commit("kept", { v: String(i) });
      const r = await snap(id);
      taken.push(r.snapshot!);
      expect(r.pruned).not.toContain(1);
    }
    const list = async () =>
      (
        await call(
          sources.listSnapshots,
          sources,
          { sourceId: id, pageSize: 0, pageToken: "" },
          tokens.memberA,
        )
      ).snapshots;
    const materialisedNow = async () =>
      (await list())
        .filter((s) => s.materialised)
        .map((s) => s.number)
        .sort();
    expect(await materialisedNow()).toEqual([1, 3, 4]);
    expect((await list()).find((s) => s.number === 1)?.pinnedBy).toEqual(["generation:g1"]);
    // A pruned snapshot cannot be pinned (its contents are gone), but its ref still diffs.
    expect(
      await codeOf(
        call(sources.pinSnapshot, sources, { sourceId: id, number: 2, holder: "late" }, tokens.memberA),
      ),
    ).toBe(status.FAILED_PRECONDITION);
    const d = await call(
      sources.diffSnapshots,
      sources,
      { sourceId: id, fromRef: taken[0]!.ref, toRef: taken[2]!.ref, pageSize: 0, pageToken: "" },
      tokens.memberA,
    );
    expect(d.fromKnown).toBe(true);
    expect(d.changes.map((c) => [c.kind, c.entry!.path])).toEqual([[ChangeKind.CHANGE_KIND_MODIFIED, "v"]]);
    // Deleting the source is refused while a snapshot is in use.
    expect(await codeOf(call(sources.deleteSource, sources, { sourceId: id }, tokens.ownerA))).toBe(
      status.FAILED_PRECONDITION,
    );
    const unpinned = await call(
      sources.unpinSnapshot,
      sources,
      { sourceId: id, number: 1, holder: "generation:g1" },
      tokens.memberA,
    );
    expect(unpinned.pruned).toBe(true);
    expect(await materialisedNow()).toEqual([3, 4]);
    expect(s1.materialised).toBe(true);
    await call(sources.deleteSource, sources, { sourceId: id }, tokens.ownerA);
    expect(await codeOf(call(sources.getSource, sources, { sourceId: id }, tokens.ownerA))).toBe(
      status.NOT_FOUND,
    );
  });

  it("serialises parallel snapshots of one source: consecutive numbers, each pruned exactly once", async () => {
    git.commit("parallel", { p: "x" });
    const id = await register("parallel");
    const results = await Promise.all(Array.from({ length: 5 }, () => snap(id, tokens.adminA)));
    const numbers = results.map((r) => r.snapshot!.number).sort();
    expect(numbers).toEqual([1, 2, 3, 4, 5]);
    const pruned = results.flatMap((r) => r.pruned).sort();
    expect(pruned).toEqual([1, 2, 3]);
    const list = (
      await call(sources.listSnapshots, sources, { sourceId: id, pageSize: 0, pageToken: "" }, tokens.ownerA)
    ).snapshots;
    expect(list.map((s) => s.number)).toEqual([5, 4, 3, 2, 1]);
    expect(list.filter((s) => s.materialised).map((s) => s.number)).toEqual([5, 4]);
    expect(new Set(list.map((s) => s.ref)).size).toBe(1);
  });
});

describe("blob collection", () => {
  it("keeps every manifest and the files of materialised snapshots; a pruned snapshot's own files go", async () => {
    const unique = randomUUID();
    const content = (n: number) => `only in snapshot ${n} ${unique}`;
    const sha = (text: string) => createHash("sha256").update(text).digest("hex");
    const shared = `shared ${unique}`;
    const id = await register("collected");
    const refs: string[] = [];
    for (let n = 1; n <= KEEP + 1; n++) {
      git.commit("collected", { own: content(n), shared });
      refs.push((await snap(id)).snapshot!.ref);
    }
    // Snapshot 1 is pruned; wait for the projection to say so.
    await eventually(async () => !(await stack.files.isReferenced(sha(content(1)))));
    const { deleted } = await collectBlobs({
      store: stack.files.blobs,
      isReferenced: (h) => stack.files.isReferenced(h),
      graceMs: 0,
    });
    expect(deleted).toContain(sha(content(1)));
    for (const kept of [sha(content(2)), sha(content(3)), sha(shared), ...refs]) {
      expect(await stack.files.blobs.stat(kept), kept).toBeDefined();
    }
    // The pruned snapshot's manifest still diffs.
    const d = await call(
      sources.diffSnapshots,
      sources,
      { sourceId: id, fromRef: refs[0]!, toRef: refs[2]!, pageSize: 0, pageToken: "" },
      tokens.ownerA,
    );
    expect(d.fromKnown).toBe(true);
    expect(d.changes.map((c) => c.entry!.path)).toEqual(["own"]);
  });
});

describe("refusals", () => {
  it("refuses an invalid TLS certificate and a redirect, recording nothing", async () => {
    badTls.commit("tls", { a: "b" });
    const tlsId = await register("tls", tokens.ownerA, "main", badTls);
    const tls = await reasonOf(snap(tlsId));
    expect(tls.code).toBe(status.FAILED_PRECONDITION);
    expect(tls.message).toContain("TLS_ERROR");
    git.commit("moved", { a: "b" });
    const movedId = await register("moved");
    git.redirectTo = `http://127.0.0.1:${git.port}`;
    try {
      const moved = await reasonOf(snap(movedId));
      expect(moved.code).toBe(status.FAILED_PRECONDITION);
      expect(moved.message).toContain("REDIRECT_REFUSED");
    } finally {
      git.redirectTo = undefined;
    }
    for (const sourceId of [tlsId, movedId]) {
      const list = await call(
        sources.listSnapshots,
        sources,
        { sourceId, pageSize: 0, pageToken: "" },
        tokens.ownerA,
      );
      expect(list.snapshots).toEqual([]);
    }
  });

  it("refuses bad registrations with field violations and records nothing", async () => {
    const bad = async (req: { url: string; gitRef: string; kind?: SourceKind }) =>
      reasonOf(
        call(
          sources.registerSource,
          sources,
          {
            displayName: "x",
            kind: req.kind ?? SourceKind.SOURCE_KIND_GIT,
            url: req.url,
            gitRef: req.gitRef,
          },
          tokens.ownerA,
        ),
      );
    const ok = git.url("x", "127.0.0.1");
    for (const [req, text] of [
      [{ url: ok.replace("https:", "http:"), gitRef: "main" }, "url"],
      [{ url: "ext::sh -c id", gitRef: "main" }, "url"],
      [{ url: ok.replace("https://", "https://user:pw@"), gitRef: "main" }, "url"],
      [{ url: ok, gitRef: "--upload-pack=touch /tmp/x" }, "git_ref"],
      [{ url: ok, gitRef: "main:refs/heads/x" }, "git_ref"],
    ] as const) {
      const r = await bad(req);
      expect(r.code, JSON.stringify(req)).toBe(status.INVALID_ARGUMENT);
      expect(r.message).toContain(text);
    }
  });
});

describe("authorization", () => {
  it("another organisation's source and snapshots are NOT_FOUND and never listed", async () => {
    git.commit("private", { secret: "a" });
    const id = await register("private");
    const s = (await snap(id)).snapshot!;
    const b = tokens.ownerB;
    const calls: (() => Promise<unknown>)[] = [
      () => call(sources.getSource, sources, { sourceId: id }, b),
      () => call(sources.takeSnapshot, sources, { sourceId: id }, b),
      () => call(sources.getSnapshot, sources, { sourceId: id, number: 1, pageSize: 0, pageToken: "" }, b),
      () => call(sources.listSnapshots, sources, { sourceId: id, pageSize: 0, pageToken: "" }, b),
      () =>
        call(
          sources.diffSnapshots,
          sources,
          { sourceId: id, fromRef: "", toRef: s.ref, pageSize: 0, pageToken: "" },
          b,
        ),
      () => call(sources.pinSnapshot, sources, { sourceId: id, number: 1, holder: "h" }, b),
      () => call(sources.unpinSnapshot, sources, { sourceId: id, number: 1, holder: "h" }, b),
      () => call(sources.deleteSource, sources, { sourceId: id }, b),
    ];
    for (const c of calls) expect(await codeOf(c())).toBe(status.NOT_FOUND);
    const listedA = await eventually(async () => {
      const r = await call(
        sources.listSources,
        sources,
        { pageSize: 0, pageToken: "", kind: 0 },
        tokens.ownerA,
      );
      return r.sources.some((x) => x.sourceId === id) && r;
    });
    expect(listedA.sources.every((x) => x.orgId === listedA.sources[0]!.orgId)).toBe(true);
    const listedB = await call(sources.listSources, sources, { pageSize: 0, pageToken: "", kind: 0 }, b);
    expect(listedB.sources.some((x) => x.sourceId === id)).toBe(false);
    // Still there, untouched, for its own organisation.
    expect(
      (await call(sources.getSource, sources, { sourceId: id }, tokens.ownerA)).source!.lastSnapshotNumber,
    ).toBe(1);
  });

  it("members read and pin but neither register, snapshot nor delete", async () => {
    git.commit("roles", { r: "1" });
    const id = await register("roles", tokens.adminA);
    const m = tokens.memberA;
    expect(await codeOf(register("roles", m))).toBe(status.PERMISSION_DENIED);
    expect(await codeOf(snap(id, m))).toBe(status.PERMISSION_DENIED);
    expect(await codeOf(call(sources.deleteSource, sources, { sourceId: id }, m))).toBe(
      status.PERMISSION_DENIED,
    );
    await snap(id, tokens.adminA);
    expect(
      (await call(sources.pinSnapshot, sources, { sourceId: id, number: 1, holder: "m" }, m)).snapshot!
        .pinnedBy,
    ).toEqual(["m"]);
    expect(await codeOf(call(sources.getSource, sources, { sourceId: id }))).toBe(status.UNAUTHENTICATED);
  });

  it("lists the organisation's sources in pages", async () => {
    const all = await eventually(async () => {
      const r = await call(
        sources.listSources,
        sources,
        { pageSize: 200, pageToken: "", kind: 0 },
        tokens.ownerA,
      );
      return r.sources.length >= 5 && r;
    });
    const seen: string[] = [];
    let pageToken = "";
    do {
      const r = await call(sources.listSources, sources, { pageSize: 2, pageToken, kind: 0 }, tokens.ownerA);
      expect(r.sources.length).toBeLessThanOrEqual(2);
      seen.push(...r.sources.map((s) => s.sourceId));
      pageToken = r.nextPageToken;
    } while (pageToken);
    expect(seen).toEqual(all.sources.map((s) => s.sourceId));
  });
});
