import { credentials } from "@grpc/grpc-js";
import { call as authCall, authEnv, startTestAuth, type TestAuth } from "@spool/auth/testing";
import { FileServiceClient } from "@spool/proto/spool/files/v1/files.js";
import type { Isolated } from "@spool/testing";
import { loadFilesConfig } from "../src/config.js";
import { type RunningFiles, startFileIngest } from "../src/wiring.js";

export { authCall };

export interface FilesStack {
  auth: TestAuth;
  files: RunningFiles;
  client: FileServiceClient;
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** Environment for file-ingest on an isolated slice of the test servers (blobs under `blobDir`). */
export function filesEnv(
  slice: Isolated,
  blobDir: string,
  overrides: Record<string, string> = {},
): Record<string, string> {
  return {
    ...authEnv(slice),
    SPOOL_GRPC_PORT: "0",
    SPOOL_REDIS_PREFIX: `${slice.redisPrefix}files:`,
    SPOOL_BLOB_DIR: blobDir,
    SPOOL_WORK_DIR: `${blobDir}-work`,
    SPOOL_SCANNER: "none",
    ...overrides,
  };
}

/** Auth and file-ingest in this process, on the test file's slice of the servers. */
export async function startFilesStack(
  slice: Isolated,
  blobDir: string,
  overrides: Record<string, string> = {},
): Promise<FilesStack> {
  const auth = await startTestAuth(slice);
  const env = filesEnv(slice, blobDir, overrides);
  const files = await startFileIngest(loadFilesConfig(env));
  const client = new FileServiceClient(`127.0.0.1:${files.port}`, credentials.createInsecure());
  return {
    auth,
    files,
    client,
    env,
    stop: async () => {
      client.close();
      await files.app.stop("test done");
      await auth.stop();
    },
  };
}

export { bearer, call, codeOf } from "@spool/testing";
