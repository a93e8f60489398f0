// The upload side of bench:files: the bytes (a seeded 1 MiB block, repeated),
// the raw limit (sha256 + write + fsync of the same bytes on the same disk, the
// way the filesystem blob store stages them), one Upload stream over gRPC, and
// the service's memory sampled from /proc while it runs.
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { constants, readFileSync } from "node:fs";
import { mkdir, open, rm } from "node:fs/promises";
import { join } from "node:path";
import { type ClientWritableStream, makeGenericClientConstructor, type ServiceError } from "@grpc/grpc-js";
import {
  type FileServiceClient,
  FileServiceService,
  UploadRequest,
  type UploadResponse,
} from "@spool/proto/spool/files/v1/files.js";
import { bearer } from "@spool/testing";

export const MiB = 1024 * 1024;

/**
 * One block of `bytes` pseudo-random bytes from `seed` (xorshift32): cheap to
 * make, the same for the same seed, different per run so the blob is new. The
 * upload repeats it; sha256 and dedupe see the whole stream, so the repetition
 * changes nothing for them.
 */
export function seededBlock(seed: number, bytes = MiB): Buffer {
  const block = Buffer.allocUnsafe(bytes);
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i + 4 <= bytes; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    block.writeUInt32LE(x >>> 0, i);
  }
  return block;
}

/**
 * UploadRequest's wire form as a careful client writes its chunks: the field's
 * tag and length, then the bytes, in one buffer (one copy). The generated
 * serializer grows a BinaryWriter to twice the chunk, copies it out in
 * finish() and again into a Buffer — three copies of every MiB, which made the
 * bench's client cost more CPU than the service on a 2-CPU machine. Other
 * messages go through the generated encoder. The bytes on the wire are the
 * same (the service returns the sha256 the bench computed itself).
 */
export function encodeUploadRequest(message: UploadRequest): Buffer {
  const part = message.part;
  if (part?.$case !== "chunk") return Buffer.from(UploadRequest.encode(message).finish());
  const chunk = part.value;
  let header = 2; // the tag (field 2, length-delimited) and the length's last byte
  for (let n = chunk.length; n >= 0x80; n = Math.floor(n / 0x80)) header++;
  const out = Buffer.allocUnsafe(header + chunk.length);
  out[0] = (2 << 3) | 2;
  let pos = 1;
  let n = chunk.length;
  while (n >= 0x80) {
    out[pos++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 0x80);
  }
  out[pos++] = n;
  out.set(chunk, pos);
  return out;
}

/** FileServiceClient with encodeUploadRequest as Upload's serializer (everything else as generated). */
export const UploadBenchClient = makeGenericClientConstructor(
  { ...FileServiceService, upload: { ...FileServiceService.upload, requestSerialize: encodeUploadRequest } },
  "spool.files.v1.FileService",
) as unknown as typeof FileServiceClient;

export interface RawHashWrite {
  bytes: number;
  seconds: number;
  /** MB/s (10^6 bytes per second). */
  mbPerSecond: number;
  sha256: string;
}

/**
 * The raw limit: the same bytes hashed (sha256) and written, chunk by chunk, to
 * a new file in `dir` (the service's staging directory, so the same
 * filesystem), fsync'ed and closed — stageToFile's loop without gRPC, limits
 * or records. The file is removed afterwards.
 */
export async function rawHashWrite(dir: string, block: Buffer, chunks: number): Promise<RawHashWrite> {
  await mkdir(dir, { recursive: true });
  // Not the store's own temp-name pattern, so its stale-file sweep never touches it.
  const path = join(dir, `bench-raw-${randomBytes(8).toString("hex")}.tmp`);
  const started = performance.now();
  const file = await open(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
  try {
    const hash = createHash("sha256");
    for (let i = 0; i < chunks; i++) {
      hash.update(block);
      await file.write(block);
    }
    await file.sync();
    await file.close();
    const seconds = (performance.now() - started) / 1000;
    const bytes = block.length * chunks;
    return { bytes, seconds, mbPerSecond: bytes / 1e6 / seconds, sha256: hash.digest("hex") };
  } finally {
    await file.close().catch(() => {});
    await rm(path, { force: true });
  }
}

export interface UploadResult {
  response: UploadResponse;
  bytes: number;
  /** From opening the call to its response (the record committed). */
  seconds: number;
  mbPerSecond: number;
  /** Times the client waited for the stream to drain (gRPC flow control pushing back). */
  drains: number;
  /** From opening the call to handing `end` to the stream (the last chunk is then at most a high-water mark away). */
  sentSeconds: number;
  /** From handing `end` to the stream to the response: the tail of the transfer, fsync, commit and record. */
  tailSeconds: number;
}

/**
 * One Upload call: metadata (with the size, no expected hash: the bench checks
 * the returned one itself), `chunks` chunk messages of `block`, then `end`.
 * Honours the stream's backpressure, so at most its high-water mark of
 * messages waits in the client.
 */
export async function uploadStream(
  client: FileServiceClient,
  token: string,
  block: Buffer,
  chunks: number,
  options: { displayName: string; deadlineMs: number },
): Promise<UploadResult> {
  const bytes = block.length * chunks;
  const started = performance.now();
  let call!: ClientWritableStream<UploadRequest>;
  const response = new Promise<UploadResponse>((resolve, reject) => {
    call = client.upload(
      bearer(token),
      { deadline: Date.now() + options.deadlineMs },
      (err: ServiceError | null, res?: UploadResponse) => (err || !res ? reject(err) : resolve(res)),
    );
  });
  // The callback reports the call's error; a stream 'error' as well would be unhandled.
  call.on("error", () => {});
  let failed = false;
  response.catch(() => {
    failed = true;
  });
  let drains = 0;
  call.write({
    part: {
      $case: "metadata",
      value: { displayName: options.displayName, contentType: "", sizeBytes: BigInt(bytes), sha256: "" },
    },
  });
  for (let i = 0; i < chunks && !failed; i++) {
    if (!call.write({ part: { $case: "chunk", value: block } })) {
      drains++;
      // Resolves on drain, or on the call failing (then the loop stops and the error surfaces below).
      await Promise.race([once(call, "drain"), response.catch(() => {})]);
    }
  }
  const sentAt = performance.now();
  if (!failed) {
    call.write({ part: { $case: "end", value: {} } });
    call.end();
  }
  const res = await response;
  const endedAt = performance.now();
  const seconds = (endedAt - started) / 1000;
  return {
    response: res,
    bytes,
    seconds,
    mbPerSecond: bytes / 1e6 / seconds,
    drains,
    sentSeconds: (sentAt - started) / 1000,
    tailSeconds: (endedAt - sentAt) / 1000,
  };
}

/** A /proc/<pid>/status field in KiB (VmRSS, VmHWM); undefined when the process is gone or not on Linux. */
export function statusKiB(pid: number, field: "VmRSS" | "VmHWM"): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
    return m?.[1] ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export interface MemoryDuring {
  /** VmRSS just before the upload. */
  rssBeforeMiB: number;
  /** Highest VmRSS sampled during the upload. */
  sampledPeakMiB: number;
  /** VmHWM (the process's peak since it started) before and after the upload. */
  hwmBeforeMiB: number;
  hwmAfterMiB: number;
  /**
   * Peak RSS during the upload: VmHWM after it when it rose during it (exact),
   * else the highest sample (the lifetime peak was earlier and higher).
   */
  peakMiB: number;
  samples: number;
  intervalMs: number;
}

/** Samples VmRSS of `pid` every `intervalMs` until the returned function is called. */
export function sampleMemory(pid: number, intervalMs = 100): () => MemoryDuring {
  const toMiB = (kib: number | undefined) => Math.round(((kib ?? Number.NaN) / 1024) * 10) / 10;
  const rssBefore = statusKiB(pid, "VmRSS");
  const hwmBefore = statusKiB(pid, "VmHWM");
  let peak = rssBefore ?? 0;
  let samples = 0;
  const timer = setInterval(() => {
    const rss = statusKiB(pid, "VmRSS");
    if (rss === undefined) return;
    samples++;
    if (rss > peak) peak = rss;
  }, intervalMs);
  return () => {
    clearInterval(timer);
    const last = statusKiB(pid, "VmRSS");
    if (last !== undefined && last > peak) peak = last;
    const hwmAfter = statusKiB(pid, "VmHWM");
    const rose = hwmAfter !== undefined && hwmBefore !== undefined && hwmAfter > hwmBefore;
    return {
      rssBeforeMiB: toMiB(rssBefore),
      sampledPeakMiB: toMiB(peak),
      hwmBeforeMiB: toMiB(hwmBefore),
      hwmAfterMiB: toMiB(hwmAfter),
      peakMiB: toMiB(rose ? hwmAfter : peak),
      samples,
      intervalMs,
    };
  };
}
