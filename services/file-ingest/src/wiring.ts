import { AuthStreams, type StartedService, startPlatform } from "@spool/kit";
import { FileServiceService } from "@spool/proto/spool/files/v1/files.js";
import { createFsBlobStore } from "./blobs/fs-blob-store.js";
import type { FilesConfig } from "./config.js";
import { FILES_STREAM } from "./domain/events.js";
import { fileService } from "./grpc/file-service.js";
import { filePolicies, fileRules } from "./grpc/policies.js";
import { registerSourceService } from "./sources/index.js";

export type RunningFiles = StartedService;

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
  p.addGuardedService(
    FileServiceService,
    fileService(),
    filePolicies,
    fileRules({ maxFileBytes: config.UPLOAD_MAX_FILE_BYTES, maxChunkBytes: config.UPLOAD_MAX_CHUNK_BYTES }),
  );
  // Sources and snapshots: SourceService, its projection (src/sources).
  registerSourceService(p, config, {
    blobs: await createFsBlobStore({ root: config.blobDir }),
    workDir: config.workDir,
  });
  return { app: p.app, port: await p.serve(), logger: p.logger };
}
