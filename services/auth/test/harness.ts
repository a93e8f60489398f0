import { randomBytes } from "node:crypto";
import { credentials } from "@grpc/grpc-js";
import { AuthServiceClient } from "@spool/proto/spool/auth/v1/auth.js";
import type { Isolated } from "@spool/testing";
import { loadAuthConfig } from "../src/config.js";
import { type RunningAuth, startAuth } from "../src/wiring.js";

/** Environment for an auth service on an isolated slice of the test servers. */
export function authEnv(slice: Isolated, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    ...slice.env,
    SPOOL_LOG_LEVEL: "silent",
    SPOOL_GRPC_HOST: "127.0.0.1",
    SPOOL_GRPC_PORT: "0",
    SPOOL_METRICS_PORT: "0",
    SPOOL_SHUTDOWN_GRACE_MS: "2000",
    SPOOL_MASTER_KEYS: `k1:${randomBytes(32).toString("base64")}`,
    SPOOL_TOKEN_SECRET: randomBytes(32).toString("base64"),
    SPOOL_BOOTSTRAP_ADMIN_EMAIL: "admin@spool.test",
    SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "correct horse battery staple 42",
    SPOOL_BOOTSTRAP_ORG_SLUG: "root",
    ...overrides,
  };
}

export interface TestAuth {
  running: RunningAuth;
  client: AuthServiceClient;
  env: Record<string, string>;
  stop(): Promise<void>;
}

export async function startTestAuth(
  slice: Isolated,
  overrides: Record<string, string> = {},
  env?: Record<string, string>,
): Promise<TestAuth> {
  const e = env ?? authEnv(slice, overrides);
  const running = await startAuth(loadAuthConfig(e));
  const client = new AuthServiceClient(`127.0.0.1:${running.port}`, credentials.createInsecure());
  return {
    running,
    client,
    env: e,
    stop: async () => {
      client.close();
      await running.app.stop("test done");
    },
  };
}

export { bearer, call, codeOf } from "@spool/testing";
