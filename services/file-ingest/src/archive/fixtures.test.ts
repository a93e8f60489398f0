// Test support, not a test (no .unit/.int in the name): archive builders
// that write hostile shapes byte by byte, where a well-behaved library would
// refuse to. yazl and tar-stream's pack build the well-formed ones.
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { createRequire, Module } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { crc32, deflateRawSync } from "node:zlib";
import tarStream, { type Header } from "tar-stream";
import type yazlTypes from "yazl";
import { ArchiveRefusedError } from "./archive.js";

// vitest runs Node with the "import" condition, so yazl's CommonJS
// require("buffer-crc32") gets that package's ESM build, whose namespace has
// the function under "default" only. Hand yazl the function itself.
const yazl = ((): typeof yazlTypes => {
  const requireFromYazl = createRequire(createRequire(import.meta.url).resolve("yazl"));
  const crcPath = requireFromYazl.resolve("buffer-crc32");
  const loaded = requireFromYazl(crcPath) as { unsigned?: unknown; default?: unknown };
  if (typeof loaded.unsigned !== "function" && loaded.default !== undefined) {
    const shim = new Module(crcPath);
    shim.exports = loaded.default;
    shim.loaded = true;
    requireFromYazl.cache[crcPath] = shim;
  }
  return requireFromYazl("yazl") as typeof yazlTypes;
})();

// ---------------------------------------------------------------- zip

export interface RawZipEntry {
  /** Central-directory name (a string is written as UTF-8 bytes). */
  name: string | Buffer;
  /** Local-header name; the central name when absent. */
  localName?: string | Buffer;
  /** Bytes stored as the entry's data (already deflated when method is 8). */
  data?: Buffer;
  method?: number;
  localMethod?: number;
  /** General-purpose flags; UTF-8 (bit 11) is added for string names unless `utf8: false`. */
  flags?: number;
  localFlags?: number;
  utf8?: boolean;
  crc32?: number;
  compressedSize?: number;
  uncompressedSize?: number;
  localCrc32?: number;
  localCompressedSize?: number;
  localUncompressedSize?: number;
  /** Unix mode in the external attributes' high 16 bits (made-by host set to Unix). */
  unixMode?: number;
  extra?: Buffer;
  localExtra?: Buffer;
  /** Writes no local header of its own; the central record points wherever `pointAt` says. */
  noLocal?: boolean;
  /** Offset of the local header the central record names, from the offsets of all written local headers. */
  pointAt?: (localOffsets: number[]) => number;
}

/** Stored (method 0) entry of these bytes. */
export function stored(name: string, content: Buffer | string, more: Partial<RawZipEntry> = {}): RawZipEntry {
  const data = Buffer.from(content);
  return { name, data, method: 0, crc32: crc32(data), uncompressedSize: data.length, ...more };
}

/** Deflated (method 8) entry of these bytes, with honest sizes unless overridden. */
export function deflated(
  name: string,
  content: Buffer | string,
  more: Partial<RawZipEntry> = {},
): RawZipEntry {
  const plain = Buffer.from(content);
  return {
    name,
    data: deflateRawSync(plain),
    method: 8,
    crc32: crc32(plain),
    uncompressedSize: plain.length,
    ...more,
  };
}

function nameBytes(name: string | Buffer): Buffer {
  return typeof name === "string" ? Buffer.from(name, "utf8") : name;
}

/** A local file header (30 bytes + name + extra) for this entry. */
export function localHeader(entry: RawZipEntry): Buffer {
  const name = nameBytes(entry.localName ?? entry.name);
  const extra = entry.localExtra ?? entry.extra ?? Buffer.alloc(0);
  const data = entry.data ?? Buffer.alloc(0);
  const header = Buffer.alloc(30);
  header.writeUInt32LE(0x04034b50, 0);
  header.writeUInt16LE(20, 4);
  header.writeUInt16LE(entry.localFlags ?? flagsOf(entry), 6);
  header.writeUInt16LE(entry.localMethod ?? entry.method ?? 0, 8);
  header.writeUInt16LE(0, 10);
  header.writeUInt16LE(0x21, 12);
  header.writeUInt32LE((entry.localCrc32 ?? entry.crc32 ?? crc32(data)) >>> 0, 14);
  header.writeUInt32LE(entry.localCompressedSize ?? entry.compressedSize ?? data.length, 18);
  header.writeUInt32LE(entry.localUncompressedSize ?? entry.uncompressedSize ?? data.length, 22);
  header.writeUInt16LE(name.length, 26);
  header.writeUInt16LE(extra.length, 28);
  return Buffer.concat([header, name, extra]);
}

function flagsOf(entry: RawZipEntry): number {
  const utf8 = entry.utf8 ?? typeof entry.name === "string";
  return (entry.flags ?? 0) | (utf8 ? 0x0800 : 0);
}

/** A zip of exactly these records: local headers and data in order, then the central directory. */
export function buildZip(entries: RawZipEntry[]): Buffer {
  const parts: Buffer[] = [];
  const localOffsets: number[] = [];
  let offset = 0;
  for (const entry of entries) {
    if (entry.noLocal) {
      localOffsets.push(-1);
      continue;
    }
    localOffsets.push(offset);
    const bytes = Buffer.concat([localHeader(entry), entry.data ?? Buffer.alloc(0)]);
    parts.push(bytes);
    offset += bytes.length;
  }
  const centralStart = offset;
  entries.forEach((entry, i) => {
    const name = nameBytes(entry.name);
    const extra = entry.extra ?? Buffer.alloc(0);
    const data = entry.data ?? Buffer.alloc(0);
    const record = Buffer.alloc(46);
    record.writeUInt32LE(0x02014b50, 0);
    record.writeUInt16LE(entry.unixMode !== undefined ? (3 << 8) | 20 : 20, 4);
    record.writeUInt16LE(20, 6);
    record.writeUInt16LE(flagsOf(entry), 8);
    record.writeUInt16LE(entry.method ?? 0, 10);
    record.writeUInt16LE(0, 12);
    record.writeUInt16LE(0x21, 14);
    record.writeUInt32LE((entry.crc32 ?? crc32(data)) >>> 0, 16);
    record.writeUInt32LE(entry.compressedSize ?? data.length, 20);
    record.writeUInt32LE(entry.uncompressedSize ?? data.length, 24);
    record.writeUInt16LE(name.length, 28);
    record.writeUInt16LE(extra.length, 30);
    record.writeUInt16LE(0, 32);
    record.writeUInt16LE(0, 34);
    record.writeUInt16LE(0, 36);
    record.writeUInt32LE(entry.unixMode !== undefined ? (entry.unixMode << 16) >>> 0 : 0, 38);
    record.writeUInt32LE(entry.pointAt ? entry.pointAt(localOffsets) : (localOffsets[i] as number), 42);
    const bytes = Buffer.concat([record, name, extra]);
    parts.push(bytes);
    offset += bytes.length;
  });
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(offset - centralStart, 12);
  end.writeUInt32LE(centralStart, 16);
  parts.push(end);
  return Buffer.concat(parts);
}

/** A well-formed zip from yazl: files (deflated) and directories (names ending in "/"). */
export async function yazlZip(files: { name: string; content?: Buffer | string }[]): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const file of files) {
    if (file.name.endsWith("/")) zip.addEmptyDirectory(file.name);
    else zip.addBuffer(Buffer.from(file.content ?? ""), file.name);
  }
  zip.end();
  const chunks: Buffer[] = [];
  for await (const chunk of zip.outputStream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

// ---------------------------------------------------------------- tar

export type TarEntry = Partial<Header> & Pick<Header, "name"> & { content?: Buffer | string };

/** A tar from tar-stream's pack (pax headers for long or non-ASCII names). */
export async function packTar(entries: TarEntry[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  for (const { content, ...header } of entries) {
    await new Promise<void>((resolvePromise, reject) => {
      const done = (error?: unknown) => (error ? reject(error) : resolvePromise());
      if (content === undefined) pack.entry(header, done);
      else pack.entry({ ...header, size: Buffer.byteLength(content) }, Buffer.from(content), done);
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** One raw ustar header: any name bytes, type flag and declared size. */
export function rawTarHeader(options: {
  name: string | Buffer;
  size: number;
  typeflag?: string;
  linkname?: string;
}): Buffer {
  const header = Buffer.alloc(512);
  nameBytes(options.name).copy(header, 0, 0, 100);
  header.write("0000644\0", 100, "latin1");
  header.write("0000000\0", 108, "latin1");
  header.write("0000000\0", 116, "latin1");
  header.write(`${options.size.toString(8).padStart(11, "0")}\0`, 124, "latin1");
  header.write("00000000000\0", 136, "latin1");
  header.write(options.typeflag ?? "0", 156, "latin1");
  if (options.linkname) header.write(options.linkname, 157, "utf8");
  header.write("ustar\0", 257, "latin1");
  header.write("00", 263, "latin1");
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
  return header;
}

/** Data padded to the 512-byte block. */
export function tarData(content: Buffer | string): Buffer {
  const data = Buffer.from(content);
  const padding = (512 - (data.length % 512)) % 512;
  return Buffer.concat([data, Buffer.alloc(padding)]);
}

/** The two zero blocks that end a tar. */
export const TAR_END = Buffer.alloc(1024);

// ---------------------------------------------------------------- workspace

/**
 * A scratch tree: `in/` holds archives, `out/` is the target, `outEvil/` a
 * sibling whose name extends the target's (the sibling-prefix escape), and
 * `base` their parent; `untouched()` checks nothing appeared outside `out/`.
 */
export interface Workspace {
  readonly base: string;
  readonly target: string;
  readonly sibling: string;
  archive(name: string, bytes: Buffer): Promise<string>;
  /** Lists every path under the target (relative, sorted, directories with a trailing "/"). */
  listTarget(): Promise<string[]>;
  /** Throws unless the base holds exactly in/, out/ and outEvil/, outEvil/ is empty and in/ holds only archives. */
  untouched(): Promise<void>;
  remove(): Promise<void>;
}

export async function workspace(): Promise<Workspace> {
  const base = await mkdtemp(join(tmpdir(), "spool-archive-"));
  const target = join(base, "out");
  const sibling = join(base, "outEvil");
  const inbox = join(base, "in");
  await mkdir(inbox);
  await mkdir(target);
  await mkdir(sibling);
  const archives = new Set<string>();
  return {
    base,
    target,
    sibling,
    async archive(name, bytes) {
      archives.add(name);
      const path = join(inbox, name);
      await writeFile(path, bytes);
      return path;
    },
    async listTarget() {
      const out: string[] = [];
      const walk = async (dir: string, prefix: string) => {
        for (const entry of await readdir(dir, { withFileTypes: true })) {
          if (entry.isDirectory()) {
            out.push(`${prefix}${entry.name}/`);
            await walk(join(dir, entry.name), `${prefix}${entry.name}/`);
          } else out.push(`${prefix}${entry.name}`);
        }
      };
      await walk(target, "");
      return out.sort();
    },
    async untouched() {
      const top = (await readdir(base)).sort();
      if (top.join(",") !== "in,out,outEvil") throw new Error(`base holds ${top.join(",")}`);
      const siblingEntries = await readdir(sibling);
      if (siblingEntries.length > 0) throw new Error(`sibling holds ${siblingEntries.join(",")}`);
      const inboxEntries = (await readdir(inbox)).filter((n) => !archives.has(n));
      if (inboxEntries.length > 0) throw new Error(`in/ holds ${inboxEntries.join(",")}`);
    },
    async remove() {
      await rm(base, { recursive: true, force: true });
    },
  };
}

/** Awaits a refusal and returns it; fails when the promise resolves or rejects with anything else. */
export async function refusalOf(promise: Promise<unknown>): Promise<ArchiveRefusedError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ArchiveRefusedError) return error;
    throw error;
  }
  throw new Error("expected an ArchiveRefusedError, the archive was accepted");
}
