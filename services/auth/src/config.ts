import { baseConfigShape, ConfigError, loadConfig, parseMasterKeys, secret } from "@spool/kit";
import { z } from "zod";

const seconds = (def: number, max: number) => z.coerce.number().int().min(1).max(max).default(def);
const DAY = 86_400;

export const authConfigShape = {
  ...baseConfigShape,
  GRPC_PORT: z.coerce.number().int().min(0).max(65535).default(50061),
  METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9461),
  REDIS_PREFIX: z.string().max(64).default("spool:auth:"),
  /** `iss` of every token. */
  AUTH_ISSUER: z.string().min(1).default("spool-auth"),
  /** `aud` of every token: the services that accept them (comma-separated). */
  AUTH_AUDIENCES: z
    .string()
    .default("spool.auth,spool.generation,spool.files,spool.tools")
    .transform((s) =>
      s
        .split(",")
        .map((a) => a.trim())
        .filter(Boolean),
    ),
  ACCESS_TOKEN_TTL_SECONDS: seconds(900, 3_600),
  SERVICE_TOKEN_TTL_SECONDS: seconds(300, 3_600),
  REFRESH_IDLE_SECONDS: seconds(30 * DAY, 365 * DAY),
  REFRESH_ABSOLUTE_SECONDS: seconds(90 * DAY, 365 * DAY),
  REFRESH_GRACE_MS: z.coerce.number().int().min(0).max(60_000).default(10_000),
  /** How long a rotated-out signing key keeps verifying (default 1 h, at least the access-token lifetime). */
  SIGNING_KEY_OVERLAP_SECONDS: seconds(3_600, 30 * DAY),
  OAUTH_STATE_TTL_SECONDS: seconds(600, 3_600),
  /** Login throttling: consecutive failures per account+IP before blocking. */
  THROTTLE_ACCOUNT_IP_FAILURES: z.coerce.number().int().min(1).max(1_000).default(10),
  /** First block after the limit; doubles with each further failure, up to the max. */
  THROTTLE_BLOCK_BASE_SECONDS: seconds(30, 3_600),
  THROTTLE_BLOCK_MAX_SECONDS: seconds(3_600, DAY),
  THROTTLE_ACCOUNT_PER_HOUR: z.coerce.number().int().min(1).max(100_000).default(100),
  THROTTLE_IP_PER_DAY: z.coerce.number().int().min(1).max(10_000_000).default(1_000),
  /** Master keys sealing private signing keys: `<id>:<base64 32 bytes>`, newest first. */
  MASTER_KEYS: secret(z.string().min(1)),
  /** HMAC key for refresh-token successors and OAuth state (at least 32 bytes, base64). */
  TOKEN_SECRET: secret(z.string().min(1)),
  BOOTSTRAP_ORG_NAME: z.string().min(1).max(200).default("Spool"),
  BOOTSTRAP_ORG_SLUG: z.string().min(3).max(40).default("spool"),
  BOOTSTRAP_ADMIN_EMAIL: z.string().min(3).max(254).default("admin@spool.local"),
  BOOTSTRAP_ADMIN_PASSWORD: secret(z.string().min(1)),
};

export type AuthConfig = ReturnType<typeof loadAuthConfig>;

/** Values shipped in examples and docs: production refuses them. */
export const DEFAULT_BOOTSTRAP_PASSWORDS = new Set([
  "change-me-please",
  "spool-dev-password",
  "admin",
  "password",
]);

export function loadAuthConfig(env: NodeJS.ProcessEnv = process.env) {
  const config = loadConfig(authConfigShape, env);
  const problems: string[] = [];
  let masterKeys: ReturnType<typeof parseMasterKeys> = [];
  try {
    masterKeys = parseMasterKeys(config.MASTER_KEYS);
  } catch (e) {
    problems.push(`SPOOL_MASTER_KEYS: ${(e as Error).message}`);
  }
  const tokenSecret = Buffer.from(config.TOKEN_SECRET, "base64");
  if (tokenSecret.length < 32) problems.push("SPOOL_TOKEN_SECRET: must be at least 32 bytes of base64");
  if (config.ENV === "production") {
    if (DEFAULT_BOOTSTRAP_PASSWORDS.has(config.BOOTSTRAP_ADMIN_PASSWORD)) {
      problems.push("SPOOL_BOOTSTRAP_ADMIN_PASSWORD: a default password is refused in production");
    }
    if (config.BOOTSTRAP_ADMIN_PASSWORD.length < 16) {
      problems.push("SPOOL_BOOTSTRAP_ADMIN_PASSWORD: at least 16 characters in production");
    }
  }
  if (config.SIGNING_KEY_OVERLAP_SECONDS < config.ACCESS_TOKEN_TTL_SECONDS) {
    problems.push("SPOOL_SIGNING_KEY_OVERLAP_SECONDS: must be at least SPOOL_ACCESS_TOKEN_TTL_SECONDS");
  }
  if (config.REFRESH_IDLE_SECONDS > config.REFRESH_ABSOLUTE_SECONDS) {
    problems.push("SPOOL_REFRESH_IDLE_SECONDS: must not exceed SPOOL_REFRESH_ABSOLUTE_SECONDS");
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return { ...config, masterKeys, tokenSecret };
}
