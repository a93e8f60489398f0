// Which archive format bytes are, from their first few KiB: the format is
// never taken from a name or a declared type alone.
import { constants, gunzipSync } from "node:zlib";
import type { ArchiveFormat } from "./archive.js";

/** Bytes read from the start of a file to tell its format (a gzip's first tar header must inflate from them). */
export const SNIFF_BYTES = 4096;

const TAR_MAGIC_OFFSET = 257;

function isZip(head: Uint8Array): boolean {
  // A local file header, or the end-of-central-directory record of an empty zip.
  return (
    head.length >= 4 &&
    head[0] === 0x50 &&
    head[1] === 0x4b &&
    ((head[2] === 0x03 && head[3] === 0x04) || (head[2] === 0x05 && head[3] === 0x06))
  );
}

function isTar(head: Uint8Array): boolean {
  // POSIX "ustar\0" and GNU "ustar " share these five bytes; pre-POSIX (v7) tars are not supported.
  return (
    head.length >= TAR_MAGIC_OFFSET + 6 &&
    Buffer.from(head.subarray(TAR_MAGIC_OFFSET, TAR_MAGIC_OFFSET + 5)).toString("latin1") === "ustar" &&
    (head[TAR_MAGIC_OFFSET + 5] === 0 || head[TAR_MAGIC_OFFSET + 5] === 0x20)
  );
}

/** The archive format of these leading bytes, or undefined (a gzip of anything but a tar is not an archive). */
export function sniffArchive(head: Uint8Array): ArchiveFormat | undefined {
  if (isZip(head)) return "zip";
  if (isTar(head)) return "tar";
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) {
    // Inflate as little as tells: a few hundred bytes of a bomb inflate to megabytes.
    for (const take of [256, 1024, SNIFF_BYTES]) {
      try {
        // Sync flush: a head cut mid-stream inflates as far as it goes instead of failing.
        const inner = gunzipSync(head.subarray(0, take), {
          finishFlush: constants.Z_SYNC_FLUSH,
          maxOutputLength: 8 * 1024 * 1024,
        });
        if (inner.length >= TAR_MAGIC_OFFSET + 6 || take >= head.length)
          return isTar(inner) ? "tar.gz" : undefined;
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

/** The format an entry's name claims ("x.zip", "x.tar", "x.tar.gz", "x.tgz"), case-insensitively. */
export function formatFromName(name: string): ArchiveFormat | undefined {
  const lower = name.toLowerCase();
  if (lower.endsWith(".zip")) return "zip";
  if (lower.endsWith(".tar")) return "tar";
  if (lower.endsWith(".tar.gz") || lower.endsWith(".tgz")) return "tar.gz";
  return undefined;
}
