import { credentials } from "@grpc/grpc-js";
import { call as authCall, authEnv, startTestAuth, type TestAuth } from "@spool/auth/testing";
import {
  type DeepPartial,
  GenerationServiceClient,
  StartGenerationRequest,
} from "@spool/proto/spool/generation/v1/generation.js";
import type { Isolated } from "@spool/testing";
import { loadGenConfig } from "../src/config.js";
import type { ModelProvider } from "../src/providers/index.js";
import { type RunningGeneration, startGenerationStream } from "../src/wiring.js";

export { authCall };

export interface Stack {
  auth: TestAuth;
  gen: RunningGeneration;
  client: GenerationServiceClient;
  env: Record<string, string>;
  stop(): Promise<void>;
}

export function genEnv(slice: Isolated, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    ...authEnv(slice),
    SPOOL_GRPC_PORT: "0",
    SPOOL_REDIS_PREFIX: `${slice.redisPrefix}gen:`,
    SPOOL_BUILTIN_TOKENS_PER_SECOND: "0",
    SPOOL_BUILTIN_LENGTH: "40",
    SPOOL_LEASE_MS: "3000",
    SPOOL_SWEEP_INTERVAL_MS: "250",
    SPOOL_HEARTBEAT_MS: "500",
    ...overrides,
  };
}

/** Auth and generation-stream in this process, on the test file's slice of the servers. */
export async function startStack(
  slice: Isolated,
  overrides: Record<string, string> = {},
  providers?: ReadonlyMap<string, ModelProvider>,
  /** Settings of the auth service (e.g. a short SPOOL_ACCESS_TOKEN_TTL_SECONDS). */
  authOverrides: Record<string, string> = {},
): Promise<Stack> {
  const auth = await startTestAuth(slice, authOverrides);
  const env = { ...genEnv(slice, overrides), ...pick(auth.env, ["SPOOL_MASTER_KEYS", "SPOOL_TOKEN_SECRET"]) };
  const gen = await startGenerationStream(loadGenConfig(env), providers ? { providers } : {});
  const client = new GenerationServiceClient(`127.0.0.1:${gen.port}`, credentials.createInsecure());
  return {
    auth,
    gen,
    client,
    env,
    stop: async () => {
      client.close();
      await gen.app.stop("test done");
      await auth.stop();
    },
  };
}

/** Another generation-stream replica on the stack's servers and settings (its own port, hub and worker). */
export async function startReplica(
  stack: Stack,
  providers?: ReadonlyMap<string, ModelProvider>,
): Promise<{ gen: RunningGeneration; client: GenerationServiceClient; stop(): Promise<void> }> {
  const gen = await startGenerationStream(loadGenConfig(stack.env), providers ? { providers } : {});
  const client = new GenerationServiceClient(`127.0.0.1:${gen.port}`, credentials.createInsecure());
  return {
    gen,
    client,
    stop: async () => {
      client.close();
      await gen.app.stop("test done");
    },
  };
}

function pick(env: Record<string, string>, keys: string[]): Record<string, string> {
  return Object.fromEntries(keys.flatMap((k) => (env[k] ? [[k, env[k]]] : [])));
}

export { bearer, call } from "@spool/testing";

/** A StartGenerationRequest of one user message to the built-in model; `more` sets anything else. */
export function startRequest(
  clientRequestId: string,
  prompt: string,
  more: DeepPartial<StartGenerationRequest> = {},
): StartGenerationRequest {
  return StartGenerationRequest.fromPartial({
    clientRequestId,
    model: "builtin",
    messages: [{ role: "user", content: prompt }],
    ...more,
  });
}
