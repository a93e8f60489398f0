// Zip through yauzl, in two passes: the whole central directory and every
// local header are checked before a byte is extracted, then each file is
// streamed through the expander's limits.
//
// What yauzl checks (3.4, read in its source): end-of-central-directory and
// zip64 structures, central and local header signatures, multi-disk zips,
// "strong encryption" (flag bit 6), extra-field lengths, file data within the
// file's bounds, and, with options we turn off, entry names (only "\",
// leading "/" or drive and ".." segments) and entry sizes. We decode names
// ourselves (decodeStrings: false) and make the size checks ourselves
// (validateEntrySizes: false) so that each problem gets its typed reason,
// and add everything else: name rules, links and devices, encryption
// (bit 0, bit 13, method 99, AES extra field 0x9901), central/local header
// agreement, overlapping entries, declared and actual sizes and ratios, CRC-32.
import type { FileHandle } from "node:fs/promises";
import { Readable } from "node:stream";
import yauzl, { type Entry, type LocalFileHeader, type ZipFile } from "yauzl";
import { type ArchiveRefusalReason, ArchiveRefusedError } from "./archive.js";
import type { Expander, Level, WrittenFile } from "./expand.js";
import type { CheckedName } from "./names.js";
import { displayName } from "./names.js";

const FLAG_ENCRYPTED = 0x0001;
const FLAG_DATA_DESCRIPTOR = 0x0008;
const FLAG_STRONG_ENCRYPTION = 0x0040;
const FLAG_UTF8 = 0x0800;
const FLAG_CENTRAL_DIRECTORY_ENCRYPTED = 0x2000;
const ENCRYPTION_FLAGS = FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_CENTRAL_DIRECTORY_ENCRYPTED;
const METHOD_STORED = 0;
const METHOD_DEFLATED = 8;
const METHOD_AES = 99;
const EXTRA_ZIP64 = 0x0001;
const EXTRA_STRONG_ENCRYPTION = 0x0017;
const EXTRA_AES = 0x9901;
/** The smallest data descriptor (CRC and two 32-bit sizes, no signature) that follows data when flag bit 3 is set. */
const MIN_DATA_DESCRIPTOR_BYTES = 12;
const READ_CHUNK_BYTES = 64 * 1024;

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

interface Planned {
  readonly entry: Entry;
  readonly shownAs: string;
  readonly name: string;
  readonly checked: CheckedName;
}

function refuse(reason: ArchiveRefusalReason, entry: string, detail: string): never {
  throw new ArchiveRefusedError(reason, displayName(entry), detail);
}

function libraryRefusal(error: unknown, entry: string): ArchiveRefusedError {
  if (error instanceof ArchiveRefusedError) return error;
  const message = error instanceof Error ? error.message : String(error);
  if (/encryption/iu.test(message)) return new ArchiveRefusedError("ENCRYPTED", displayName(entry), message);
  if (/multi-disk|compression method/iu.test(message)) {
    return new ArchiveRefusedError("UNSUPPORTED_FORMAT", displayName(entry), message);
  }
  return new ArchiveRefusedError("CORRUPT", displayName(entry), message);
}

/**
 * Random access through our own file handle: yauzl's fromFd closes the
 * descriptor itself when done (a double close, racing with descriptor
 * reuse), and a nested archive is read from a handle whose path is gone.
 */
class FileHandleReader extends yauzl.RandomAccessReader {
  constructor(private readonly file: FileHandle) {
    super();
  }

  /** Small reads (headers) straight from the handle, instead of yauzl's default stream per read. */
  override read(
    buffer: Buffer,
    offset: number,
    length: number,
    position: number,
    callback: (error: Error | null) => void,
  ): void {
    const readAll = async () => {
      let done = 0;
      while (done < length) {
        const { bytesRead } = await this.file.read(buffer, offset + done, length - done, position + done);
        if (bytesRead === 0) throw new Error("unexpected EOF");
        done += bytesRead;
      }
    };
    // yauzl's callback also takes the byte count (its types omit it) and compares it with `length`.
    const done = callback as (error: Error | null, bytesRead?: number) => void;
    readAll().then(
      () => done(null, length),
      (error: Error) => done(error),
    );
  }

  override _readStreamForRange(start: number, end: number): Readable {
    const file = this.file;
    let position = start;
    return new Readable({
      highWaterMark: READ_CHUNK_BYTES,
      read() {
        const length = Math.min(READ_CHUNK_BYTES, end - position);
        if (length <= 0) {
          this.push(null);
          return;
        }
        file.read(Buffer.allocUnsafe(length), 0, length, position).then(
          ({ buffer, bytesRead }) => {
            if (bytesRead === 0) {
              this.push(null);
              return;
            }
            position += bytesRead;
            this.push(buffer.subarray(0, bytesRead));
          },
          (error: Error) => this.destroy(error),
        );
      },
    });
  }
}

function openZip(file: FileHandle, size: number): Promise<ZipFile> {
  return new Promise((resolvePromise, reject) => {
    yauzl.fromRandomAccessReader(
      new FileHandleReader(file),
      size,
      {
        lazyEntries: true,
        autoClose: false,
        decodeStrings: false,
        validateEntrySizes: false,
        strictFileNames: true,
      },
      (error, zip) => (error || !zip ? reject(error ?? new Error("no zip")) : resolvePromise(zip)),
    );
  });
}

function readEntries(zip: ZipFile, onEntry: (entry: Entry) => void): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const cleanup = () => {
      zip.removeListener("entry", entryListener);
      zip.removeListener("end", endListener);
      zip.removeListener("error", errorListener);
    };
    const entryListener = (entry: Entry) => {
      try {
        onEntry(entry);
        zip.readEntry();
      } catch (error) {
        cleanup();
        reject(error);
      }
    };
    const endListener = () => {
      cleanup();
      resolvePromise();
    };
    const errorListener = (error: unknown) => {
      cleanup();
      reject(error);
    };
    zip.on("entry", entryListener);
    zip.on("end", endListener);
    zip.on("error", errorListener);
    zip.readEntry();
  });
}

/** The entry's name: the Info-ZIP Unicode path extra field if valid, else UTF-8 (flag bit 11) or CP437. */
function decodeName(flags: number, raw: Buffer, extra: yauzl.ExtraField[]): string {
  return yauzl.getFileNameLowLevel(flags, raw, extra, true);
}

/** The Unix file type from the external attributes' high 16 bits, when a Unix-aware tool set them. */
function unixType(entry: Entry): number {
  return ((entry.externalFileAttributes >>> 16) & S_IFMT) >>> 0;
}

function checkEncryption(flags: number, method: number, extra: yauzl.ExtraField[], shownAs: string): void {
  if (flags & ENCRYPTION_FLAGS) refuse("ENCRYPTED", shownAs, "encrypted entry");
  if (method === METHOD_AES || extra.some((f) => f.id === EXTRA_AES || f.id === EXTRA_STRONG_ENCRYPTION)) {
    refuse("ENCRYPTED", shownAs, "AES or strongly encrypted entry");
  }
}

/** Local header sizes, with 0xFFFFFFFF resolved through the local zip64 extra field. */
function localSizes(
  header: LocalFileHeader,
  extra: yauzl.ExtraField[],
): { compressed: number; uncompressed: number } {
  let uncompressed = header.uncompressedSize;
  let compressed = header.compressedSize;
  const zip64 = extra.find((f) => f.id === EXTRA_ZIP64)?.data;
  let at = 0;
  if (zip64 && uncompressed === 0xffffffff && zip64.length >= at + 8) {
    uncompressed = Number(zip64.readBigUInt64LE(at));
    at += 8;
  }
  if (zip64 && compressed === 0xffffffff && zip64.length >= at + 8) {
    compressed = Number(zip64.readBigUInt64LE(at));
  }
  return { compressed, uncompressed };
}

function parseExtra(buffer: Buffer, shownAs: string): yauzl.ExtraField[] {
  try {
    return yauzl.parseExtraFields(buffer);
  } catch (error) {
    throw libraryRefusal(error, shownAs);
  }
}

export async function expandZip(
  expander: Expander,
  level: Level,
  file: FileHandle,
  archiveSize: number,
): Promise<WrittenFile[]> {
  let zip: ZipFile;
  try {
    zip = await openZip(file, archiveSize);
  } catch (error) {
    throw libraryRefusal(error, level.shownPrefix.slice(0, -1));
  }
  try {
    return await expandOpenZip(expander, level, zip, archiveSize);
  } finally {
    zip.close();
  }
}

async function expandOpenZip(
  expander: Expander,
  level: Level,
  zip: ZipFile,
  archiveSize: number,
): Promise<WrittenFile[]> {
  const { limits } = expander;
  const archiveName = level.shownPrefix.slice(0, -1);
  // yauzl starts reading the central directory here; no entry may reach into it.
  const centralDirectoryOffset = Number((zip as unknown as { readEntryCursor: number }).readEntryCursor);
  if (expander.entries + zip.entryCount > limits.maxEntries) {
    refuse("TOO_MANY_ENTRIES", archiveName, `${zip.entryCount} entries, limit ${limits.maxEntries}`);
  }

  // Pass 1: the central directory.
  const planned: Planned[] = [];
  let declaredTotal = 0;
  try {
    await readEntries(zip, (entry) => {
      const name = decodeName(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields);
      const shownAs = level.shownPrefix + name;
      expander.countEntry(shownAs);
      checkEncryption(entry.generalPurposeBitFlag, entry.compressionMethod, entry.extraFields, shownAs);
      const type = unixType(entry);
      if (type === S_IFLNK) refuse("LINK", shownAs, "symbolic link");
      if (type !== 0 && type !== S_IFREG && type !== S_IFDIR)
        refuse("DEVICE", shownAs, "device, FIFO or socket");
      if (entry.compressionMethod !== METHOD_STORED && entry.compressionMethod !== METHOD_DEFLATED) {
        refuse("UNSUPPORTED_FORMAT", shownAs, `compression method ${entry.compressionMethod}`);
      }
      const isDirectory = name.endsWith("/") || type === S_IFDIR;
      const checked = expander.checkName(level, name, isDirectory, shownAs);
      if (checked.directory && entry.uncompressedSize !== 0) {
        refuse("SIZE_MISMATCH", shownAs, "a directory with data");
      }
      if (entry.compressionMethod === METHOD_STORED && entry.compressedSize !== entry.uncompressedSize) {
        refuse("SIZE_MISMATCH", shownAs, "stored entry whose compressed and uncompressed sizes differ");
      }
      expander.checkDeclaredSize(shownAs, entry.uncompressedSize);
      if (
        entry.uncompressedSize > limits.ratioGraceBytes &&
        entry.uncompressedSize > limits.maxRatio * entry.compressedSize
      ) {
        refuse("RATIO_EXCEEDED", shownAs, `declares more than ${limits.maxRatio} times its compressed size`);
      }
      declaredTotal += entry.uncompressedSize;
      expander.checkDeclaredTotal(shownAs, declaredTotal);
      planned.push({ entry, shownAs, name, checked });
    });
  } catch (error) {
    throw libraryRefusal(error, archiveName);
  }

  // Pass 1b: local headers. Each entry's bytes (header, name, extra, data,
  // descriptor) must lie where the central directory says, apart from every
  // other entry's and before the central directory: overlap bombs reuse one
  // compressed kernel for many entries.
  const locals: LocalFileHeader[] = [];
  const ranges: { start: number; end: number; shownAs: string }[] = [];
  for (const item of planned) {
    let header: LocalFileHeader;
    try {
      header = await zip.readLocalFileHeaderPromise(item.entry);
    } catch (error) {
      throw libraryRefusal(error, item.shownAs);
    }
    locals.push(header);
    const descriptor =
      item.entry.generalPurposeBitFlag & FLAG_DATA_DESCRIPTOR ? MIN_DATA_DESCRIPTOR_BYTES : 0;
    ranges.push({
      start: item.entry.relativeOffsetOfLocalHeader,
      end: header.fileDataStart + item.entry.compressedSize + descriptor,
      shownAs: item.shownAs,
    });
  }
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  let previous: (typeof sorted)[number] | undefined;
  for (const range of sorted) {
    if (previous && range.start < previous.end) {
      refuse("OVERLAPPING_ENTRIES", range.shownAs, `overlaps "${displayName(previous.shownAs)}"`);
    }
    if (range.end > centralDirectoryOffset || range.end > archiveSize) {
      refuse("OVERLAPPING_ENTRIES", range.shownAs, "overlaps the central directory");
    }
    previous = range;
  }
  planned.forEach((item, i) => {
    compareHeaders(item, locals[i] as LocalFileHeader);
  });

  // Pass 2: the data.
  const written: WrittenFile[] = [];
  for (const item of planned) {
    if (item.checked.directory) {
      await expander.writeDirectory(level, item.checked, item.shownAs);
      continue;
    }
    let stream: NodeJS.ReadableStream;
    try {
      stream = await zip.openReadStreamPromise(item.entry);
    } catch (error) {
      throw libraryRefusal(error, item.shownAs);
    }
    written.push(
      await expander.writeFile(level, item.checked, item.shownAs, stream as AsyncIterable<Buffer>, {
        declaredSize: item.entry.uncompressedSize,
        compressedSize: item.entry.compressedSize,
        expectedCrc32: item.entry.crc32,
      }),
    );
  }
  return written;
}

/** The local header must say what the central directory says: same name bytes, flags that matter, method and sizes. */
function compareHeaders(item: Planned, local: LocalFileHeader): void {
  const { entry, shownAs } = item;
  const localExtra = parseExtra(local.extraField, shownAs);
  checkEncryption(local.generalPurposeBitFlag, local.compressionMethod, localExtra, shownAs);
  if (!local.fileName.equals(entry.fileNameRaw)) {
    refuse(
      "HEADER_MISMATCH",
      shownAs,
      `local header names "${displayName(local.fileName.toString("latin1"))}"`,
    );
  }
  const localName = decodeName(local.generalPurposeBitFlag, local.fileName, localExtra);
  const meaningful = FLAG_UTF8 | FLAG_DATA_DESCRIPTOR;
  if (
    localName !== item.name ||
    (local.generalPurposeBitFlag & meaningful) !== (entry.generalPurposeBitFlag & meaningful)
  ) {
    refuse("HEADER_MISMATCH", shownAs, "local header decodes to another name");
  }
  if (local.compressionMethod !== entry.compressionMethod) {
    refuse("HEADER_MISMATCH", shownAs, "local header has another compression method");
  }
  if (!(local.generalPurposeBitFlag & FLAG_DATA_DESCRIPTOR)) {
    const sizes = localSizes(local, localExtra);
    if (
      sizes.compressed !== entry.compressedSize ||
      sizes.uncompressed !== entry.uncompressedSize ||
      local.crc32 >>> 0 !== entry.crc32 >>> 0
    ) {
      refuse("HEADER_MISMATCH", shownAs, "local header has other sizes or CRC-32");
    }
  }
}
