import { AuthStreams, RateLimiter, type StartedService, startPlatform } from "@spool/kit";
import { FileServiceService } from "@spool/proto/spool/files/v1/files.js";
import { Files } from "./app/files.js";
import { BlobCollector } from "./blobs/blob-collector.js";
import type { BlobStore } from "./blobs/blob-store.js";
import { createFsBlobStore } from "./blobs/fs-blob-store.js";
import { createNatsBlobStore } from "./blobs/nats-blob-store.js";
import { type FilesConfig, uploadLimits } from "./config.js";
import { FILES_STREAM } from "./domain/events.js";
import { fileService, notAvailable } from "./grpc/file-service.js";
import { filePolicies, fileRules } from "./grpc/policies.js";
import { OrgQuota } from "./limits/org-quota.js";
import { FilesReadModel, filesProjection } from "./projections/files.js";

export interface RunningFiles extends StartedService {
  files: Files;
  blobs: BlobStore;
  collector: BlobCollector;
  quota: OrgQuota;
  readModel: FilesReadModel;
  /** The FILES stream's last sequence (tests: "nothing was appended"). */
  head(): Promise<number>;
}

/** Builds and starts file-ingest (the composition root, minus process concerns). */
export async function startFileIngest(
  config: FilesConfig,
  overrides: { signal?: AbortSignal } = {},
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
  const collector = new BlobCollector({
    store: blobs,
    isReferenced: (sha256) => readModel.isReferenced(sha256),
    graceMs: config.BLOB_GC_GRACE_SECONDS * 1000,
    intervalMs: config.BLOB_GC_INTERVAL_SECONDS * 1000,
    logger,
  });
  p.onClose("blob collector", () => collector.stop());

  p.addGuardedService(
    FileServiceService,
    fileService({
      files,
      readModel,
      waitForProjection: (sequence) => projection.waitFor(sequence, config.LIST_WAIT_MAX_MS),
      uploadMaxMs: config.UPLOAD_MAX_MS,
      downloadChunkBytes: config.DOWNLOAD_CHUNK_BYTES,
      importUrl: notAvailable,
      expandArchive: notAvailable,
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
    head: () => p.head(FILES_STREAM.name),
  };
}
