// Tar and tar.gz through tar-stream (and zlib), in one streaming pass: each
// header is checked when it arrives, its data streamed through the
// expander's limits; a refusal later on empties the target all the same.
//
// What tar-stream checks (3.2, read in its source): header checksums, the
// ustar/GNU magic (unknown formats refused), negative or unparsable sizes,
// pax and GNU long-name headers up to 4 MiB, and an archive that ends before
// an entry's declared size. It applies pax "path", "linkpath" and "size" and
// GNU long names for us. It does not look at names, types or sizes beyond
// that, and it reads a directory's "data" as the next header, so a directory
// with a size is refused here. We add: every name rule, links, devices and
// FIFOs, unknown and sparse types, declared and actual sizes, and for
// tar.gz the ratio of the decompressed stream to the compressed bytes
// consumed so far (gzip compresses the tar as one stream, so a per-entry
// ratio does not exist; every byte inflated counts, headers and padding
// included, so a stream of zero blocks is a bomb too).
import type { FileHandle } from "node:fs/promises";
import { Transform, type TransformCallback } from "node:stream";
import { createGunzip, type Gunzip } from "node:zlib";
import tarStream from "tar-stream";
import { type ArchiveRefusalReason, ArchiveRefusedError } from "./archive.js";
import type { Expander, Level, WrittenFile } from "./expand.js";
import { displayName } from "./names.js";

/** Header, pax and padding bytes allowed per entry beyond the data, and once for the archive's end blocks. */
const TAR_OVERHEAD_PER_ENTRY = 4096;
const TAR_OVERHEAD_FIXED = 1024 * 1024;

function refusal(reason: ArchiveRefusalReason, entry: string, detail: string): ArchiveRefusedError {
  return new ArchiveRefusedError(reason, displayName(entry), detail);
}

export async function expandTar(
  expander: Expander,
  level: Level,
  file: FileHandle,
  gzip: boolean,
): Promise<WrittenFile[]> {
  const { limits } = expander;
  const archiveName = level.shownPrefix.slice(0, -1);
  let current = archiveName;
  let streamBytes = 0;
  let failure: unknown;

  const source = file.createReadStream({ start: 0, autoClose: false });
  const gunzip: Gunzip | undefined = gzip ? createGunzip() : undefined;
  const extract = tarStream.extract();
  const fail = (error: unknown) => {
    failure ??= error;
    extract.destroy(failure as Error);
  };
  // Every byte the tar parser sees, bounded before it is parsed.
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      streamBytes += chunk.length;
      const cap = limits.maxTotalBytes + TAR_OVERHEAD_FIXED + TAR_OVERHEAD_PER_ENTRY * (expander.entries + 1);
      if (streamBytes > cap) {
        callback(refusal("TOO_LARGE", current, `tar stream longer than ${cap} bytes`));
        return;
      }
      if (
        gunzip &&
        streamBytes > limits.ratioGraceBytes &&
        streamBytes > limits.maxRatio * Math.max(gunzip.bytesWritten, 1)
      ) {
        callback(
          refusal(
            "RATIO_EXCEEDED",
            current,
            `inflates to more than ${limits.maxRatio} times the compressed bytes read`,
          ),
        );
        return;
      }
      callback(null, chunk);
    },
  });
  source.on("error", fail);
  gunzip?.on("error", fail);
  meter.on("error", fail);
  extract.on("error", (error: unknown) => {
    failure ??= error;
  });
  if (gunzip) source.pipe(gunzip).pipe(meter).pipe(extract);
  else source.pipe(meter).pipe(extract);

  const written: WrittenFile[] = [];
  try {
    for await (const entry of extract) {
      const header = entry.header;
      const shownAs = level.shownPrefix + header.name;
      current = shownAs;
      expander.countEntry(shownAs);
      switch (header.type) {
        case "file":
        case "contiguous-file":
        case "directory":
          break;
        case "link":
          throw refusal("LINK", shownAs, "hard link");
        case "symlink":
          throw refusal("LINK", shownAs, "symbolic link");
        case "character-device":
        case "block-device":
          throw refusal("DEVICE", shownAs, "device");
        case "fifo":
          throw refusal("DEVICE", shownAs, "FIFO");
        default:
          throw refusal("UNSUPPORTED_FORMAT", shownAs, "unknown entry type");
      }
      if (header.pax && Object.keys(header.pax).some((key) => key.startsWith("GNU.sparse"))) {
        throw refusal("UNSUPPORTED_FORMAT", shownAs, "sparse file");
      }
      const size = header.size ?? 0;
      const isDirectory = header.type === "directory";
      if (isDirectory && size !== 0) throw refusal("SIZE_MISMATCH", shownAs, "a directory with data");
      const checked = expander.checkName(level, header.name, isDirectory, shownAs);
      if (checked.directory) {
        if (!isDirectory && size !== 0) throw refusal("SIZE_MISMATCH", shownAs, "a directory with data");
        await expander.writeDirectory(level, checked, shownAs);
        entry.resume();
        continue;
      }
      expander.checkDeclaredSize(shownAs, size);
      expander.checkDeclaredTotal(shownAs, size);
      written.push(
        await expander.writeFile(level, checked, shownAs, entry as AsyncIterable<Uint8Array>, {
          declaredSize: size,
          shortSourceIsSizeMismatch: true,
        }),
      );
      current = archiveName;
    }
  } catch (error) {
    if (failure instanceof ArchiveRefusedError || !(error instanceof ArchiveRefusedError)) {
      throw classify(failure ?? error, current, archiveName);
    }
    throw error;
  } finally {
    source.unpipe();
    gunzip?.unpipe();
    meter.unpipe();
    source.destroy();
    gunzip?.destroy();
    meter.destroy();
    extract.destroy();
  }
  if (failure !== undefined) throw classify(failure, current, archiveName);
  return written;
}

function classify(error: unknown, current: string, archiveName: string): unknown {
  if (error instanceof ArchiveRefusedError) return error;
  if (error instanceof Error && error.name === "AbortError") return error;
  const message = error instanceof Error ? error.message : String(error);
  // Ending inside an entry means its header declared more bytes than the archive holds.
  if (current !== archiveName && /unexpected end of (data|file)/iu.test(message)) {
    return refusal("SIZE_MISMATCH", current, message);
  }
  return refusal("CORRUPT", current, message);
}
