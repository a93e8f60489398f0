import { AuthStreams, principalOf, RateLimiter, type StartedService, startPlatform } from "@spool/kit";
import { expandArchiveFile } from "./app/expand-archive.js";
import { Files } from "./app/files.js";
import { importUrl } from "./app/import-url.js";
import { expandArchive } from "./archive/index.js";
import { BlobCollector } from "./blobs/blob-collector.js";
import type { BlobStore } from "./blobs/blob-store.js";
import { createFsBlobStore } from "./blobs/fs-blob-store.js";
import { createNatsBlobStore } from "./blobs/nats-blob-store.js";
import { archiveLimits, type FilesConfig, uploadLimits } from "./config.js";
import { FILES_STREAM } from "./domain/events.js";
import { fileService } from "./grpc/file-service.js";
import { fromState } from "./grpc/mapping.js";
import { filePolicies, fileRules } from "./grpc/policies.js";
import { fileServiceDefinition } from "./grpc/upload-codec.js";
import { OrgQuota } from "./limits/org-quota.js";
import { FilesReadModel, filesProjection } from "./projections/files.js";
import { createClamdScanner } from "./scanning/clamd-scanner.js";
import { createNoopScanner } from "./scanning/noop-scanner.js";
import { startScanReactor } from "./scanning/scan-reactor.js";
import type { Scanner } from "./scanning/scanner.js";
import { registerSourceService } from "./sources/index.js";

export interface RunningFiles extends StartedService {
  files: Files;
  blobs: BlobStore;
  collector: BlobCollector;
  quota: OrgQuota;
  readModel: FilesReadModel;
  /** What the blob collector asks: is a blob still referenced (files or sources)? */
  isReferenced(sha256: string): Promise<boolean>;
  /** The FILES stream's last sequence (tests: "nothing was appended"). */
  head(): Promise<number>;
}

/** Builds and starts file-ingest (the composition root, minus process concerns). */
export async function startFileIngest(
  config: FilesConfig,
  /** signal: aborts start-up waits; importCa: CA for URL imports (tests' local HTTPS servers). */
  overrides: { signal?: AbortSignal; importCa?: string } = {},
): Promise<RunningFiles> {
  const p = await startPlatform({
    name: "file-ingest",
    config,
    streams: [FILES_STREAM],
    consumes: [AuthStreams.AUTH],
    audience: config.AUTH_AUDIENCE,
    signal: overrides.signal,
  });
  const { logger } = p;
  const blobs =
    config.BLOB_STORE === "nats"
      ? await createNatsBlobStore({
          nc: p.nc,
          bucket: p.namespace.stream("FILES_BLOBS"),
          stagingDir: config.workDir,
        })
      : await createFsBlobStore({ root: config.blobDir });
  p.onClose("blob store", () => blobs.close());
  const projection = p.projector(filesProjection);
  const readModel = new FilesReadModel(p.sql);
  const limits = uploadLimits(config);
  const quota = new OrgQuota({
    redis: p.redis,
    prefix: config.REDIS_PREFIX,
    limit: limits.maxOrgStoredBytes,
    usedFromProjection: (orgId) => readModel.storedBytes(orgId),
  });
  const rate = new RateLimiter(p.redis, config.REDIS_PREFIX, [
    { name: "uploads_per_user", limit: limits.uploadsPerWindow, periodMs: limits.windowMs },
  ]);
  const files = new Files({ store: p.store, blobs, quota, rate, limits, logger });
  // Sources and snapshots: SourceService and its projection (src/sources).
  const sources = registerSourceService(p, config, { blobs, workDir: config.workDir });
  const isReferenced = async (sha256: string) =>
    (await readModel.isReferenced(sha256)) || (await sources.isReferenced(sha256));
  const collector = new BlobCollector({
    store: blobs,
    isReferenced,
    graceMs: config.BLOB_GC_GRACE_SECONDS * 1000,
    intervalMs: config.BLOB_GC_INTERVAL_SECONDS * 1000,
    logger,
  });
  p.onClose("blob collector", () => collector.stop());
  const scanner = scannerFromConfig(config);
  p.onClose("scanner", () => scanner.close());
  startScanReactor(p, { scanner, blobs });

  const importSettings = {
    maxBytes: config.IMPORT_MAX_BYTES,
    timeoutMs: config.IMPORT_TIMEOUT_MS,
    maxRedirects: config.IMPORT_MAX_REDIRECTS,
    allowHttp: config.IMPORT_ALLOW_HTTP,
    allowedPorts: config.importPorts,
    unsafeAllowedTargets: config.importUnsafeTargets,
    ...(overrides.importCa ? { ca: overrides.importCa } : {}),
  };
  const expandSettings = { workDir: config.workDir, limits: archiveLimits(config) };
  p.addGuardedService(
    fileServiceDefinition,
    fileService({
      files,
      readModel,
      waitForProjection: (sequence) => projection.waitFor(sequence, config.LIST_WAIT_MAX_MS),
      uploadMaxMs: config.UPLOAD_MAX_MS,
      downloadChunkBytes: config.DOWNLOAD_CHUNK_BYTES,
      importUrl: async (req, ctx) => {
        const r = await importUrl(files, importSettings, principalOf(ctx), req, ctx.signal);
        return { file: fromState(r.file), sequence: BigInt(r.sequence) };
      },
      expandArchive: async (req, ctx) => {
        const expand = { files, blobs, expand: expandArchive, settings: expandSettings };
        const recorded = await expandArchiveFile(expand, principalOf(ctx), req.fileId, ctx.signal);
        const last = recorded.at(-1);
        return { files: recorded.map((r) => fromState(r.file)), sequence: BigInt(last?.sequence ?? 0) };
      },
    }),
    filePolicies,
    fileRules({ maxFileBytes: config.UPLOAD_MAX_FILE_BYTES, maxChunkBytes: config.UPLOAD_MAX_CHUNK_BYTES }),
  );
  await p.ready(); // the projection's table exists before the collector asks it
  collector.start();
  return {
    app: p.app,
    port: await p.serve(),
    logger,
    files,
    blobs,
    collector,
    quota,
    readModel,
    isReferenced,
    head: () => p.head(FILES_STREAM.name),
  };
}

/** clamd (its socket, or host and port) or, outside production only (config.ts refuses it there), none. */
function scannerFromConfig(config: FilesConfig): Scanner {
  if (config.SCANNER === "none") return createNoopScanner();
  return createClamdScanner({
    address: config.CLAMD_SOCKET
      ? { socketPath: config.CLAMD_SOCKET }
      : { host: config.CLAMD_HOST, port: config.CLAMD_PORT },
    timeoutMs: config.CLAMD_TIMEOUT_MS,
    maxStreamBytes: config.CLAMD_MAX_STREAM_BYTES,
  });
}
