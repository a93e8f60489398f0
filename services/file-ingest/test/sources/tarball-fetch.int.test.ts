// The tarball fetcher against local HTTPS servers (test CA passed explicitly):
// download through the kit's SSRF-safe client, expansion by the archive
// expander, files into the filesystem blob store.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createFsBlobStore, type FsBlobStore } from "../../src/blobs/fs-blob-store.js";
import { snapshotRef } from "../../src/sources/domain/manifest.js";
import { fetchTarball, type TarballFetchOptions } from "../../src/sources/fetch/tarball.js";
import { SourceFetchError } from "../../src/sources/fetch/types.js";
import { startTarballServer, type TarballServer } from "./tarball-server.js";
import { makeTestCerts, type TestCerts } from "./tls.js";

let certs: TestCerts;
let server: TarballServer;
let selfSigned: TarballServer;
let blobs: FsBlobStore;
const workDir = mkdtempSync(join(tmpdir(), "spool-tarball-work-"));
const limits = {
  maxFiles: 100,
  maxFileBytes: 1024 * 1024,
  maxTotalBytes: 4 * 1024 * 1024,
  maxFetchBytes: 16 * 1024 * 1024,
  maxPathBytes: 1024,
  timeoutMs: 60_000,
};

function options(overrides: Partial<TarballFetchOptions> = {}): TarballFetchOptions {
  const ports = [server.port, selfSigned.port];
  return {
    blobs,
    limits,
    workDir,
    ca: certs.ca,
    maxRedirects: 3,
    target: {
      allowedPorts: new Set([443, ...ports]),
      addressAllowed: () => false,
      unsafeAllowedTargets: new Set(ports.map((p) => `127.0.0.1:${p}`)),
    },
    ...overrides,
  };
}

async function reason(p: Promise<unknown>): Promise<string> {
  const e = await p.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(e).toBeInstanceOf(SourceFetchError);
  return (e as SourceFetchError).reason;
}

beforeAll(async () => {
  certs = makeTestCerts();
  blobs = await createFsBlobStore({ root: mkdtempSync(join(tmpdir(), "spool-tarball-blobs-")) });
  server = await startTarballServer(certs);
  selfSigned = await startTarballServer({ key: certs.selfSignedKey, cert: certs.selfSignedCert });
});

afterAll(async () => {
  await server?.close();
  await selfSigned?.close();
});

describe("tarball fetcher", () => {
  it("downloads and expands a tar.gz into the blob store; identical content gives the same ref, one byte another", async () => {
    const files = { "README.md": "# t\n", "src/é.ts": "x" };
    server.tarball("/one.tar.gz", files);
    server.tarball("/two.tar.gz", files);
    const one = await fetchTarball(server.url("/one.tar.gz"), options());
    expect(one.entries.map((e) => e.path).sort()).toEqual(["README.md", "src/é.ts"]);
    const two = await fetchTarball(server.url("/two.tar.gz"), options());
    expect(snapshotRef(two.entries)).toBe(snapshotRef(one.entries));
    server.tarball("/two.tar.gz", { ...files, "src/é.ts": "y" });
    const changed = await fetchTarball(server.url("/two.tar.gz"), options());
    expect(snapshotRef(changed.entries)).not.toBe(snapshotRef(one.entries));
  });

  it("follows an https redirect but refuses one to plain http", async () => {
    server.tarball("/real.tar.gz", { a: "b" });
    server.redirect("/moved.tar.gz", server.url("/real.tar.gz"));
    expect((await fetchTarball(server.url("/moved.tar.gz"), options())).entries).toHaveLength(1);
    server.redirect("/insecure.tar.gz", `http://127.0.0.1:${server.port}/real.tar.gz`);
    expect(await reason(fetchTarball(server.url("/insecure.tar.gz"), options()))).toBe("INSECURE_REDIRECT");
  });

  it("refuses an invalid certificate, and the test CA counts only when passed", async () => {
    selfSigned.tarball("/x.tar.gz", { a: "b" });
    expect(await reason(fetchTarball(selfSigned.url("/x.tar.gz"), options()))).toBe("TLS_ERROR");
    const { ca: _, ...withoutCa } = options();
    expect(await reason(fetchTarball(server.url("/real.tar.gz"), withoutCa))).toBe("TLS_ERROR");
  });

  it("refuses blocked addresses and non-https URLs before any request", async () => {
    const before = server.requests.length;
    const o = options();
    expect(
      await reason(
        fetchTarball(server.url("/real.tar.gz"), {
          ...o,
          target: { ...o.target, unsafeAllowedTargets: new Set() },
        }),
      ),
    ).toBe("ADDRESS_BLOCKED");
    expect(await reason(fetchTarball(`http://127.0.0.1:${server.port}/real.tar.gz`, o))).toBe(
      "SCHEME_NOT_ALLOWED",
    );
    expect(server.requests.length).toBe(before);
  });

  it("refuses what the archive expander refuses, and archives over the source limits", async () => {
    server.raw("/garbage.tar.gz", Buffer.from("not an archive at all"));
    expect(await reason(fetchTarball(server.url("/garbage.tar.gz"), options()))).toBe("ARCHIVE_REFUSED");
    server.tarball("/many.tar.gz", { a: "1", b: "2", c: "3" });
    expect(
      await reason(fetchTarball(server.url("/many.tar.gz"), options({ limits: { ...limits, maxFiles: 2 } }))),
    ).toBe("ARCHIVE_REFUSED");
    expect(await reason(fetchTarball(server.url("/missing.tar.gz"), options()))).toBe("FETCH_FAILED");
  });
});
