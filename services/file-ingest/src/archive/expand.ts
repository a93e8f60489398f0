// expandArchive: the ExpandArchive contract. The format readers (zip.ts,
// tar.ts) parse with yauzl and tar-stream and make the checks those
// libraries do not; this file owns the target directory: it creates
// directories and files only under it (exclusive create, never following a
// link, containment checked after resolving), enforces the size and ratio
// limits on the bytes actually written, expands nested archives, and empties
// the target on any refusal or error.
import { createHash } from "node:crypto";
import {
  constants,
  type FileHandle,
  lstat,
  mkdir,
  open,
  readdir,
  realpath,
  rm,
  unlink,
} from "node:fs/promises";
import { join, resolve, sep } from "node:path";
import { crc32 } from "node:zlib";
import {
  type ArchiveFormat,
  type ArchiveLimits,
  type ArchiveRefusalReason,
  ArchiveRefusedError,
  type ExpandArchive,
  type ExpandedEntry,
} from "./archive.js";
import { type CheckedName, checkEntryName, displayName, NameRegistry } from "./names.js";
import { formatFromName, SNIFF_BYTES, sniffArchive } from "./sniff.js";
import { expandTar } from "./tar.js";
import { expandZip } from "./zip.js";

const FILE_MODE = 0o600;
const DIRECTORY_MODE = 0o700;

/** One archive being expanded: the top one (depth 0) or a nested one under its own path. */
export interface Level {
  /** Segments of the nested archive's path ([] for the top archive). */
  readonly prefix: readonly string[];
  readonly depth: number;
  /** Prepended to entry names in errors ("docs.zip/"). */
  readonly shownPrefix: string;
}

/** A file written, with what nested-archive detection needs. */
export interface WrittenFile extends ExpandedEntry {
  readonly segments: readonly string[];
  readonly shownAs: string;
  /** The first SNIFF_BYTES bytes when the name is an archive's ("x.zip"), else empty. */
  readonly head: Buffer;
}

export interface WriteOptions {
  /** The size the archive declares; more bytes, or (at the end) fewer, is SIZE_MISMATCH. */
  readonly declaredSize?: number;
  /** The entry's own compressed size (zip), for its ratio. */
  readonly compressedSize?: number;
  /** The CRC-32 the archive declares (zip); a mismatch is CORRUPT. */
  readonly expectedCrc32?: number;
  /** Tar: the source failing before declaredSize bytes means the archive ends mid-entry (SIZE_MISMATCH). */
  readonly shortSourceIsSizeMismatch?: boolean;
}

function refuse(reason: ArchiveRefusalReason, entry: string, detail: string): never {
  throw new ArchiveRefusedError(reason, displayName(entry), detail);
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class Expander {
  readonly names = new NameRegistry();
  #entries = 0;
  #totalBytes = 0;
  /** Relative paths of directories created (or found) and verified to resolve where they should. */
  readonly #directories = new Set<string>();

  constructor(
    readonly root: string,
    readonly limits: ArchiveLimits,
    /** Size of the top archive: the whole expansion's ratio is measured against it. */
    readonly archiveBytes: number,
    readonly signal: AbortSignal | undefined,
  ) {}

  get entries(): number {
    return this.#entries;
  }

  /** Counts one entry (files, directories, anything), nested archives' included. */
  countEntry(shownAs: string): void {
    this.signal?.throwIfAborted();
    this.#entries += 1;
    if (this.#entries > this.limits.maxEntries) {
      refuse("TOO_MANY_ENTRIES", shownAs, `more than ${this.limits.maxEntries} entries`);
    }
  }

  /** Refuses, before any byte is read, an archive whose declared sizes already break a limit. */
  checkDeclaredSize(shownAs: string, size: number): void {
    if (size > this.limits.maxEntryBytes) {
      refuse("TOO_LARGE", shownAs, `declares ${size} bytes, limit ${this.limits.maxEntryBytes} per entry`);
    }
  }

  checkDeclaredTotal(shownAs: string, declared: number): void {
    const total = this.#totalBytes + declared;
    if (total > this.limits.maxTotalBytes) {
      refuse("TOO_LARGE", shownAs, `declares ${total} bytes in all, limit ${this.limits.maxTotalBytes}`);
    }
    this.#checkTotalRatio(shownAs, total);
  }

  checkName(level: Level, raw: string, isDirectory: boolean, shownAs: string): CheckedName {
    const checked = checkEntryName(raw, isDirectory, this.limits, level.prefix, shownAs);
    this.names.register([...level.prefix, ...checked.segments], checked.directory, shownAs);
    return checked;
  }

  #checkTotalRatio(shownAs: string, total: number): void {
    const { maxRatio, ratioGraceBytes } = this.limits;
    if (total > ratioGraceBytes && total > maxRatio * this.archiveBytes) {
      refuse(
        "RATIO_EXCEEDED",
        shownAs,
        `expands to more than ${maxRatio} times the archive's ${this.archiveBytes} bytes`,
      );
    }
  }

  /**
   * Creates each directory of `segments` under the root (mode 0700) unless
   * this expansion already did; an existing one must be a real directory, and
   * the deepest must resolve (realpath) to exactly where it should.
   */
  async ensureDirectories(segments: readonly string[], shownAs: string): Promise<string> {
    let dir = this.root;
    for (let i = 1; i <= segments.length; i++) {
      const relative = segments.slice(0, i).join("/");
      dir = join(this.root, ...segments.slice(0, i));
      if (this.#directories.has(relative)) continue;
      this.#checkContained(dir, shownAs);
      try {
        await mkdir(dir, { mode: DIRECTORY_MODE });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
        const stat = await lstat(dir);
        if (stat.isSymbolicLink()) refuse("LINK", shownAs, "a link stands where a directory goes");
        if (!stat.isDirectory()) refuse("DUPLICATE_NAME", shownAs, "a directory's place is taken");
      }
      if ((await realpath(dir)) !== dir) refuse("PARENT_SEGMENT", shownAs, "resolves outside the target");
      this.#directories.add(relative);
    }
    return dir;
  }

  #checkContained(absolute: string, shownAs: string): void {
    // Checked on the resolved path, with the separator: "/t/x" must not accept "/t-evil/x".
    if (!resolve(absolute).startsWith(this.root + sep)) {
      refuse("PARENT_SEGMENT", shownAs, "resolves outside the target");
    }
  }

  async writeDirectory(level: Level, checked: CheckedName, shownAs: string): Promise<void> {
    await this.ensureDirectories([...level.prefix, ...checked.segments], shownAs);
  }

  /**
   * Streams one entry's bytes into a new file (O_EXCL|O_NOFOLLOW, mode 0600),
   * computing size and sha256 as it goes and enforcing the entry and total
   * size limits and the ratio limits on the bytes actually produced, so a
   * header that lies is caught mid-stream.
   */
  async writeFile(
    level: Level,
    checked: CheckedName,
    shownAs: string,
    source: AsyncIterable<Uint8Array>,
    options: WriteOptions = {},
  ): Promise<WrittenFile> {
    const segments = [...level.prefix, ...checked.segments];
    const parent = await this.ensureDirectories(segments.slice(0, -1), shownAs);
    const path = join(parent, segments[segments.length - 1] as string);
    this.#checkContained(path, shownAs);
    const { maxEntryBytes, maxTotalBytes, maxRatio, ratioGraceBytes } = this.limits;
    const hash = createHash("sha256");
    const headChunks: Buffer[] = [];
    // Only a file named like an archive can be a nested one; others keep no head (10,000 × 4 KiB adds up).
    let headBytes = formatFromName(segments[segments.length - 1] as string) === undefined ? SNIFF_BYTES : 0;
    let size = 0;
    let crc = 0;
    let file: FileHandle;
    try {
      file = await open(
        path,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        FILE_MODE,
      );
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST") {
        if ((await lstat(path)).isSymbolicLink())
          refuse("LINK", shownAs, "a link stands where the file goes");
        refuse("DUPLICATE_NAME", shownAs, "file exists");
      }
      throw error;
    }
    try {
      try {
        for await (const chunk of source) {
          this.signal?.throwIfAborted();
          size += chunk.length;
          this.#totalBytes += chunk.length;
          if (options.declaredSize !== undefined && size > options.declaredSize) {
            refuse("SIZE_MISMATCH", shownAs, `more bytes than the ${options.declaredSize} declared`);
          }
          if (size > maxEntryBytes) refuse("TOO_LARGE", shownAs, `more than ${maxEntryBytes} bytes`);
          if (this.#totalBytes > maxTotalBytes) {
            refuse("TOO_LARGE", shownAs, `archive expands to more than ${maxTotalBytes} bytes`);
          }
          if (
            options.compressedSize !== undefined &&
            size > ratioGraceBytes &&
            size > maxRatio * options.compressedSize
          ) {
            refuse(
              "RATIO_EXCEEDED",
              shownAs,
              `more than ${maxRatio} times its ${options.compressedSize} compressed bytes`,
            );
          }
          this.#checkTotalRatio(shownAs, this.#totalBytes);
          hash.update(chunk);
          if (options.expectedCrc32 !== undefined) crc = crc32(chunk, crc);
          if (headBytes < SNIFF_BYTES) {
            const take = Buffer.from(chunk.subarray(0, SNIFF_BYTES - headBytes));
            headChunks.push(take);
            headBytes += take.length;
          }
          let written = 0;
          while (written < chunk.length) {
            written += (await file.write(chunk, written, chunk.length - written)).bytesWritten;
          }
        }
      } catch (error) {
        if (error instanceof ArchiveRefusedError || this.signal?.aborted) throw error;
        if (
          options.shortSourceIsSizeMismatch &&
          options.declaredSize !== undefined &&
          size < options.declaredSize
        ) {
          refuse(
            "SIZE_MISMATCH",
            shownAs,
            `archive ends after ${size} of the ${options.declaredSize} bytes declared`,
          );
        }
        refuse("CORRUPT", shownAs, errorMessage(error));
      }
      if (options.declaredSize !== undefined && size !== options.declaredSize) {
        refuse("SIZE_MISMATCH", shownAs, `${size} bytes, ${options.declaredSize} declared`);
      }
      if (options.expectedCrc32 !== undefined && crc >>> 0 !== options.expectedCrc32 >>> 0) {
        refuse("CORRUPT", shownAs, "CRC-32 does not match");
      }
    } finally {
      await file.close();
    }
    return {
      path: segments.join("/"),
      size,
      sha256: hash.digest("hex"),
      segments,
      shownAs,
      head: Buffer.concat(headChunks),
    };
  }

  /** Expands one archive (top or nested) and, within the depth limit, the archives among its files. */
  async expandLevel(
    level: Level,
    file: FileHandle,
    size: number,
    format: ArchiveFormat,
  ): Promise<ExpandedEntry[]> {
    let written: WrittenFile[];
    try {
      written =
        format === "zip"
          ? await expandZip(this, level, file, size)
          : await expandTar(this, level, file, format === "tar.gz");
    } catch (error) {
      // An abort surfaces through library callbacks and streams; report it as the caller's own reason.
      if (this.signal?.aborted) throw this.signal.reason;
      throw error;
    }
    const out: ExpandedEntry[] = [];
    for (const entry of written) {
      const nested = nestedArchiveFormat(entry);
      if (!nested) {
        out.push({ path: entry.path, size: entry.size, sha256: entry.sha256 });
        continue;
      }
      if (level.depth + 1 > this.limits.maxNestingDepth) {
        refuse(
          "NESTING_TOO_DEEP",
          entry.shownAs,
          `an archive nested ${level.depth + 1} deep, limit ${this.limits.maxNestingDepth}`,
        );
      }
      out.push(...(await this.#expandNested(level, entry, nested)));
    }
    return out;
  }

  /**
   * A nested archive's file is replaced by a directory of the same name
   * holding its entries: opened, unlinked (its bytes stay readable through
   * the open handle, and nothing is left if the process dies), then expanded.
   */
  async #expandNested(level: Level, entry: WrittenFile, format: ArchiveFormat): Promise<ExpandedEntry[]> {
    const path = join(this.root, ...entry.segments);
    const file = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      await unlink(path);
      this.names.becomeDirectory(entry.segments);
      await this.ensureDirectories(entry.segments, entry.shownAs);
      return await this.expandLevel(
        { prefix: entry.segments, depth: level.depth + 1, shownPrefix: `${entry.shownAs}/` },
        file,
        entry.size,
        format,
      );
    } finally {
      await file.close();
    }
  }
}

/** An entry named like an archive whose bytes are that archive's format; anything else stays a plain file. */
function nestedArchiveFormat(entry: WrittenFile): ArchiveFormat | undefined {
  const claimed = formatFromName(entry.segments[entry.segments.length - 1] ?? "");
  return claimed !== undefined && sniffArchive(entry.head) === claimed ? claimed : undefined;
}

function checkLimits(limits: ArchiveLimits): void {
  for (const [name, value] of Object.entries(limits)) {
    const min = name === "maxNestingDepth" || name === "ratioGraceBytes" ? 0 : 1;
    if (!Number.isSafeInteger(value) || value < min) {
      throw new RangeError(`archive limit ${name} must be an integer ≥ ${min}`);
    }
  }
}

/** The target must be an empty real directory (created when missing); its resolved path is the root. */
async function prepareTarget(targetDir: string): Promise<string> {
  try {
    await mkdir(targetDir, { mode: DIRECTORY_MODE });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }
  const stat = await lstat(targetDir);
  if (!stat.isDirectory()) throw new Error("archive target is not a directory");
  if ((await readdir(targetDir)).length > 0) throw new Error("archive target directory is not empty");
  return realpath(targetDir);
}

/** Removes everything under root (never following links: rm unlinks a link itself), keeping root. */
async function emptyDirectory(root: string): Promise<void> {
  for (const name of await readdir(root)) {
    await rm(join(root, name), { recursive: true, force: true });
  }
}

async function readHead(file: FileHandle): Promise<Buffer> {
  const buffer = Buffer.alloc(SNIFF_BYTES);
  const { bytesRead } = await file.read(buffer, 0, SNIFF_BYTES, 0);
  return buffer.subarray(0, bytesRead);
}

export const expandArchive: ExpandArchive = async (input, targetDir, limits, options = {}) => {
  checkLimits(limits);
  options.signal?.throwIfAborted();
  const root = await prepareTarget(targetDir);
  let file: FileHandle | undefined;
  try {
    file = await open(input.path, constants.O_RDONLY);
    const size = (await file.stat()).size;
    const format = sniffArchive(await readHead(file));
    if (format === undefined) refuse("UNSUPPORTED_FORMAT", "", "not a zip, tar or tar.gz archive");
    if (input.format !== undefined && input.format !== format) {
      refuse("UNSUPPORTED_FORMAT", "", `declared ${input.format}, the bytes are ${format}`);
    }
    const expander = new Expander(root, limits, size, options.signal);
    return await expander.expandLevel({ prefix: [], depth: 0, shownPrefix: "" }, file, size, format);
  } catch (error) {
    await emptyDirectory(root);
    throw error;
  } finally {
    await file?.close();
  }
};
