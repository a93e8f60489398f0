// The git fetcher against a real git smart-HTTP server over HTTPS (git
// http-backend behind a node https server), with a test CA passed explicitly.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createFsBlobStore, type FsBlobStore } from "../../src/blobs/fs-blob-store.js";
import { snapshotRef } from "../../src/sources/domain/manifest.js";
import { fetchGit, type GitFetchOptions } from "../../src/sources/fetch/git.js";
import { SourceFetchError } from "../../src/sources/fetch/types.js";
import { type GitHttpsServer, startGitHttpsServer } from "./git-server.js";
import { makeTestCerts, type TestCerts } from "./tls.js";

let certs: TestCerts;
let server: GitHttpsServer;
let selfSigned: GitHttpsServer;
let blobs: FsBlobStore;
const workDir = mkdtempSync(join(tmpdir(), "spool-sources-work-"));
const limits = {
  maxFiles: 100,
  maxFileBytes: 1024 * 1024,
  maxTotalBytes: 4 * 1024 * 1024,
  maxFetchBytes: 16 * 1024 * 1024,
  maxPathBytes: 1024,
  timeoutMs: 60_000,
};

function options(overrides: Partial<GitFetchOptions> = {}, port = server.port): GitFetchOptions {
  return {
    blobs,
    limits,
    workDir,
    caFile: certs.caFile,
    target: {
      allowedPorts: new Set([443, port]),
      // Everything is blocked but the exact test targets: what the SSRF policy does to loopback.
      addressAllowed: () => false,
      unsafeAllowedTargets: new Set([`127.0.0.1:${port}`]),
      lookup: async () => ["127.0.0.1"],
    },
    ...overrides,
  };
}

async function text(chunks: AsyncIterable<Uint8Array>): Promise<string> {
  const parts: Uint8Array[] = [];
  for await (const c of chunks) parts.push(c);
  return Buffer.concat(parts).toString();
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  const e = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(e).toBeInstanceOf(SourceFetchError);
  return (e as SourceFetchError).reason;
}

beforeAll(async () => {
  certs = makeTestCerts();
  blobs = await createFsBlobStore({ root: mkdtempSync(join(tmpdir(), "spool-sources-blobs-")) });
  server = await startGitHttpsServer(certs);
  selfSigned = await startGitHttpsServer({ key: certs.selfSignedKey, cert: certs.selfSignedCert });
});

afterAll(async () => {
  await server?.close();
  await selfSigned?.close();
});

describe("git fetcher", () => {
  it("fetches a branch into the blob store: every regular file, symbolic links left out", async () => {
    const commit = server.commit(
      "app",
      { "README.md": "# app\n", "src/main.ts": "console.log(1);\n", "dir/é.txt": "unicode" },
      { symlinks: { "link-to-passwd": "/etc/passwd" } },
    );
    const tree = await fetchGit({ url: server.url("app"), ref: "main" }, options());
    expect(tree.commit).toBe(commit);
    expect(tree.skippedLinks).toBe(1);
    const paths = tree.entries.map((e) => e.path).sort();
    expect(paths).toEqual(["README.md", "dir/é.txt", "src/main.ts"]);
    const readme = tree.entries.find((e) => e.path === "README.md");
    expect(await text(blobs.read(readme?.sha256 ?? ""))).toBe("# app\n");
  });

  it("gives the same ref for identical content in another repository, another ref for one byte changed", async () => {
    const files = { "a.txt": "alpha", "b/c.txt": "gamma" };
    server.commit("one", files);
    server.commit("two", files);
    const refOne = snapshotRef((await fetchGit({ url: server.url("one"), ref: "main" }, options())).entries);
    const refTwo = snapshotRef((await fetchGit({ url: server.url("two"), ref: "main" }, options())).entries);
    expect(refTwo).toBe(refOne);
    server.commit("two", { ...files, "b/c.txt": "gammb" });
    const changed = snapshotRef((await fetchGit({ url: server.url("two"), ref: "main" }, options())).entries);
    expect(changed).not.toBe(refOne);
  });

  it("streams large files through intact, next to empty ones", async () => {
    const big = randomBytes(3 * 1024 * 1024 + 7);
    server.commit("large", { "big.bin": big, empty: "", "z.txt": "after" });
    const tree = await fetchGit(
      { url: server.url("large"), ref: "main" },
      options({ limits: { ...limits, maxFileBytes: 4 * 1024 * 1024, maxTotalBytes: 8 * 1024 * 1024 } }),
    );
    const byPath = new Map(tree.entries.map((e) => [e.path, e]));
    expect(byPath.get("big.bin")).toEqual({
      path: "big.bin",
      size: big.length,
      sha256: createHash("sha256").update(big).digest("hex"),
    });
    expect(byPath.get("empty")?.size).toBe(0);
    expect(await text(blobs.read(byPath.get("z.txt")?.sha256 ?? ""))).toBe("after");
  });

  it("fetches a tag-less branch by name and a commit by id", async () => {
    const first = server.commit("refs", { "v.txt": "1" }, { branch: "release" });
    const byName = await fetchGit({ url: server.url("refs"), ref: "release" }, options());
    expect(byName.commit).toBe(first);
    const byId = await fetchGit({ url: server.url("refs"), ref: first }, options());
    expect(byId.commit).toBe(first);
  });

  it("connects only to the addresses it judged: a name no DNS knows is pinned to them", async () => {
    server.commit("pinned", { x: "y" });
    const tree = await fetchGit({ url: server.url("pinned", "git.spool.test"), ref: "main" }, options());
    expect(tree.entries.map((e) => e.path)).toEqual(["x"]);
    // The same name with a trailing dot is the same name: still pinned, never resolved by curl.
    const dotted = await fetchGit({ url: server.url("pinned", "git.spool.test."), ref: "main" }, options());
    expect(dotted.entries.map((e) => e.path)).toEqual(["x"]);
  });

  it("refuses a host resolving to a blocked address before git runs", async () => {
    server.commit("blocked", { x: "y" });
    const before = server.requests.length;
    const o = options();
    const reason = await refusal(
      fetchGit(
        { url: server.url("blocked"), ref: "main" },
        { ...o, target: { ...o.target, unsafeAllowedTargets: new Set() } },
      ),
    );
    expect(reason).toBe("ADDRESS_BLOCKED");
    // A mixed answer (one allowed, one blocked record) is refused whole.
    const mixed = await refusal(
      fetchGit(
        { url: server.url("blocked"), ref: "main" },
        { ...o, target: { ...o.target, lookup: async () => ["127.0.0.1", "10.0.0.1"] } },
      ),
    );
    expect(mixed).toBe("ADDRESS_BLOCKED");
    expect(server.requests.length).toBe(before);
  });

  it("refuses an invalid TLS certificate (self-signed), and the test CA only counts when passed", async () => {
    selfSigned.commit("app", { x: "y" });
    expect(
      await refusal(fetchGit({ url: selfSigned.url("app"), ref: "main" }, options({}, selfSigned.port))),
    ).toBe("TLS_ERROR");
    // Without the narrow caFile option, the test CA is not trusted either.
    const { caFile: _, ...withoutCa } = options();
    expect(await refusal(fetchGit({ url: server.url("app"), ref: "main" }, withoutCa))).toBe("TLS_ERROR");
  });

  it("refuses a redirect (to plain http or anywhere)", async () => {
    server.commit("moved", { x: "y" });
    server.redirectTo = `http://127.0.0.1:${server.port}`;
    try {
      expect(await refusal(fetchGit({ url: server.url("moved"), ref: "main" }, options()))).toBe(
        "REDIRECT_REFUSED",
      );
    } finally {
      server.redirectTo = undefined;
    }
  });

  it("refuses URLs that are not https, carry credentials or use another port, before any I/O", async () => {
    const before = server.requests.length;
    const cases: [string, string][] = [
      [`http://127.0.0.1:${server.port}/app.git`, "SCHEME_NOT_ALLOWED"],
      [`file:///etc`, "SCHEME_NOT_ALLOWED"],
      [`ext::sh -c touch% /tmp/pwned`, "SCHEME_NOT_ALLOWED"],
      ["not a url", "INVALID_URL"],
      [`https://user:pw@127.0.0.1:${server.port}/app.git`, "USERINFO_NOT_ALLOWED"],
      [`https://127.0.0.1:22/app.git`, "PORT_NOT_ALLOWED"],
    ];
    for (const [url, reason] of cases) {
      expect(await refusal(fetchGit({ url, ref: "main" }, options())), url).toBe(reason);
    }
    expect(server.requests.length).toBe(before);
  });

  it("refuses refs that look like options or refspecs, and reports a missing ref", async () => {
    const marker = join(workDir, "pwned");
    for (const ref of [
      `--upload-pack=touch ${marker}`,
      "-x",
      "main:refs/heads/evil",
      "+main",
      "a..b",
      "main.lock",
      "@{-1}",
      "",
    ]) {
      expect(await refusal(fetchGit({ url: server.url("app"), ref }, options())), ref).toBe("INVALID_REF");
    }
    expect(existsSync(marker)).toBe(false);
    expect(await refusal(fetchGit({ url: server.url("app"), ref: "no-such-branch" }, options()))).toBe(
      "REF_NOT_FOUND",
    );
  });

  it("stops a fetch that brings in more than the fetch limit", async () => {
    server.commit("heavy", { "noise.bin": randomBytes(512 * 1024) });
    expect(
      await refusal(
        fetchGit(
          { url: server.url("heavy"), ref: "main" },
          options({ limits: { ...limits, maxFetchBytes: 256 * 1024 } }),
        ),
      ),
    ).toBe("FETCH_TOO_LARGE");
  });

  it("enforces the file count and size limits from the tree listing", async () => {
    server.commit("big", { a: "1", b: "2", c: "x".repeat(2000) });
    expect(
      await refusal(
        fetchGit({ url: server.url("big"), ref: "main" }, options({ limits: { ...limits, maxFiles: 2 } })),
      ),
    ).toBe("TOO_MANY_FILES");
    expect(
      await refusal(
        fetchGit(
          { url: server.url("big"), ref: "main" },
          options({ limits: { ...limits, maxFileBytes: 1000 } }),
        ),
      ),
    ).toBe("FILE_TOO_LARGE");
    expect(
      await refusal(
        fetchGit(
          { url: server.url("big"), ref: "main" },
          options({ limits: { ...limits, maxTotalBytes: 1500 } }),
        ),
      ),
    ).toBe("TOO_LARGE");
  });
});
