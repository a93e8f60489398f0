// Benchmark support, not a test (no .unit/.int in the name; kept beside the
// code so it resolves yauzl and tar-stream from this package): the archive
// expander's rate beside the raw libraries' own on the same archive, read
// and written to the same disk without any check or hash.
// bench/files/archive.ts prints it; the lead's `make bench` may call
// measureArchiveExpansion directly.

import { once } from "node:events";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { finished, pipeline } from "node:stream/promises";
import { createGunzip, gzipSync } from "node:zlib";
import tarStream from "tar-stream";
import yauzl, { type Entry } from "yauzl";
import { DEFAULT_ARCHIVE_LIMITS } from "./archive.js";
import { expandArchive } from "./expand.js";
import { buildZip, deflated, packTar } from "./fixtures.test.js";

export interface ArchiveBenchFigure {
  readonly label: string;
  readonly entries: number;
  readonly bytes: number;
  readonly seconds: number;
}

export interface ArchiveBenchResult {
  readonly format: "zip" | "tar.gz";
  readonly archiveBytes: number;
  readonly spool: ArchiveBenchFigure;
  /** The library reading every entry and writing its bytes to files, nothing else. */
  readonly rawWrite: ArchiveBenchFigure;
  /** The library reading (and inflating) every entry, writing nothing. */
  readonly rawRead: ArchiveBenchFigure;
}

/**
 * Text-like files in a few directories: compressible (about 4:1) like
 * source trees, each distinct so no two share bytes.
 */
function workload(entries: number, meanBytes: number): { name: string; content: Buffer }[] {
  const words = ["alpha", "beta", "gamma", "delta", "spool", "archive", "entry", "stream", "byte", "limit"];
  const files: { name: string; content: Buffer }[] = [];
  let seed = 42;
  const next = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed;
  };
  for (let i = 0; i < entries; i++) {
    const size = Math.max(64, Math.round(meanBytes * (0.25 + (next() % 1500) / 1000)));
    const parts: string[] = [];
    let length = 0;
    while (length < size) {
      const word = `${words[next() % words.length]}${next() % 1000} `;
      parts.push(word);
      length += word.length;
    }
    const name = `dir${i % 16}/sub${i % 7}/file-${i}.txt`;
    files.push({ name, content: Buffer.from(parts.join("").slice(0, size)) });
  }
  return files;
}

async function timed(
  label: string,
  run: () => Promise<{ entries: number; bytes: number }>,
): Promise<ArchiveBenchFigure> {
  const start = process.hrtime.bigint();
  const { entries, bytes } = await run();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { label, entries, bytes, seconds };
}

async function freshDir(base: string, name: string): Promise<string> {
  const dir = join(base, name);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir);
  return dir;
}

async function rawZip(path: string, target: string | undefined): Promise<{ entries: number; bytes: number }> {
  const zip = await yauzl.openPromise(path, { lazyEntries: true });
  let entries = 0;
  let bytes = 0;
  const made = new Set<string>();
  for await (const entry of zip.eachEntry() as AsyncIterable<Entry>) {
    entries += 1;
    if (entry.fileName.endsWith("/")) continue;
    const stream = await zip.openReadStreamPromise(entry);
    if (target === undefined) {
      for await (const chunk of stream) bytes += (chunk as Buffer).length;
      continue;
    }
    const dest = join(target, entry.fileName);
    const dir = dirname(dest);
    if (!made.has(dir)) {
      await mkdir(dir, { recursive: true });
      made.add(dir);
    }
    await pipeline(stream, createWriteStream(dest));
    bytes += entry.uncompressedSize;
  }
  zip.close();
  return { entries, bytes };
}

async function rawTarGz(
  path: string,
  target: string | undefined,
): Promise<{ entries: number; bytes: number }> {
  const extract = tarStream.extract();
  createReadStream(path).pipe(createGunzip()).pipe(extract);
  let entries = 0;
  let bytes = 0;
  const made = new Set<string>();
  for await (const entry of extract) {
    entries += 1;
    if (entry.header.type !== "file") {
      entry.resume();
      continue;
    }
    if (target === undefined) {
      for await (const chunk of entry) bytes += (chunk as Buffer).length;
      continue;
    }
    const dest = join(target, entry.header.name);
    const dir = dirname(dest);
    if (!made.has(dir)) {
      await mkdir(dir, { recursive: true });
      made.add(dir);
    }
    const out = createWriteStream(dest);
    for await (const chunk of entry) {
      if (!out.write(chunk)) await once(out, "drain");
    }
    out.end();
    await finished(out);
    bytes += entry.header.size;
  }
  return { entries, bytes };
}

/**
 * Builds one zip and one tar.gz of `entries` files (mean `meanBytes`) in a
 * temporary directory on `tmpBase`'s disk, then measures, once each:
 * expandArchive, the raw library writing the same files, and the raw
 * library reading only. Removes everything it wrote.
 */
export async function measureArchiveExpansion(
  options: { entries?: number; meanBytes?: number; tmpBase?: string } = {},
): Promise<ArchiveBenchResult[]> {
  const entries = options.entries ?? 2000;
  const files = workload(entries, options.meanBytes ?? 24 * 1024);
  const base = await mkdtemp(join(options.tmpBase ?? tmpdir(), "spool-archive-bench-"));
  try {
    const zipPath = join(base, "bench.zip");
    const tgzPath = join(base, "bench.tar.gz");
    await writeFile(zipPath, buildZip(files.map((f) => deflated(f.name, f.content))));
    await writeFile(tgzPath, gzipSync(await packTar(files)));
    // A check that the workload is what the figures say.
    const expectedBytes = files.reduce((sum, f) => sum + f.content.length, 0);
    const results: ArchiveBenchResult[] = [];
    for (const [format, path, raw] of [
      ["zip", zipPath, rawZip],
      ["tar.gz", tgzPath, rawTarGz],
    ] as const) {
      const spool = await timed("spool expandArchive (checks, sha256, write)", async () => {
        const expanded = await expandArchive({ path }, await freshDir(base, "spool"), DEFAULT_ARCHIVE_LIMITS);
        const bytes = expanded.reduce((sum, e) => sum + e.size, 0);
        if (bytes !== expectedBytes || expanded.length !== entries) throw new Error("expansion lost bytes");
        return { entries: expanded.length, bytes };
      });
      const rawWrite = await timed(
        `raw ${format === "zip" ? "yauzl" : "tar-stream + zlib"} (write)`,
        async () => raw(path, await freshDir(base, "raw")),
      );
      const rawRead = await timed(
        `raw ${format === "zip" ? "yauzl" : "tar-stream + zlib"} (read only)`,
        async () => raw(path, undefined),
      );
      results.push({ format, archiveBytes: (await stat(path)).size, spool, rawWrite, rawRead });
      await rm(join(base, "spool"), { recursive: true, force: true });
      await rm(join(base, "raw"), { recursive: true, force: true });
    }
    return results;
  } finally {
    await rm(base, { recursive: true, force: true });
  }
}
