import type { GenConfig } from "../config.js";
import { BuiltinModel } from "./builtin.js";
import { OpenAIProvider } from "./openai.js";
import type { ModelProvider } from "./types.js";

/** The models this process runs by name: the built-in one, and the OpenAI-compatible ones when configured. */
export function providersFromConfig(config: GenConfig): Map<string, ModelProvider> {
  const providers = new Map<string, ModelProvider>([
    [
      "builtin",
      new BuiltinModel({
        tokensPerSecond: config.BUILTIN_TOKENS_PER_SECOND,
        length: config.BUILTIN_LENGTH,
        maxTokens: config.BUILTIN_MAX_TOKENS,
      }),
    ],
  ]);
  const { OPENAI_BASE_URL: baseUrl, OPENAI_API_KEY: apiKey } = config;
  if (!baseUrl || !apiKey || config.openaiModels.size === 0) return providers;
  for (const name of config.openaiModels.keys()) {
    const provider = new OpenAIProvider({
      baseUrl,
      apiKey,
      models: Object.fromEntries(config.openaiModels),
      connectTimeoutMs: config.OPENAI_CONNECT_TIMEOUT_MS,
      firstTokenTimeoutMs: config.OPENAI_FIRST_TOKEN_TIMEOUT_MS,
      idleTimeoutMs: config.OPENAI_IDLE_TIMEOUT_MS,
      maxAttempts: config.OPENAI_MAX_ATTEMPTS,
    });
    providers.set(name, provider);
  }
  return providers;
}
