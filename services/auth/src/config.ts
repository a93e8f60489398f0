import {
  baseConfigShape,
  ConfigError,
  decodeKeyMaterial,
  loadConfig,
  parseMasterKeys,
  secret,
} from "@spool/kit";
import { z } from "zod";
import {
  DEFAULT_PASSWORD_MIN_SCORE,
  foldPassword,
  KNOWN_DEFAULT_PASSWORDS,
  passwordProblem,
} from "./domain/password-policy.js";

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
  /** Lowest zxcvbn strength score (0-4) a password may have, wherever one is set. */
  PASSWORD_MIN_SCORE: z.coerce.number().int().min(0).max(4).default(DEFAULT_PASSWORD_MIN_SCORE),
};

export type AuthConfig = ReturnType<typeof loadAuthConfig>;

/** Values shipped in examples and docs, compared folded: production refuses them in any spelling. */
export const DEFAULT_BOOTSTRAP_PASSWORDS: ReadonlySet<string> = new Set(
  KNOWN_DEFAULT_PASSWORDS.map(foldPassword),
);

/**
 * Decodes the token secret strictly (canonical base64, at least 32 random
 * bytes) and refuses one that contains a master key: the secrets have
 * different jobs and must not leak together.
 */
function parseTokenSecret(text: string, masterKeys: readonly { key: Buffer }[]): Buffer {
  const secret = decodeKeyMaterial(text, { atLeast: 32 });
  if (masterKeys.some((k) => secret.includes(k.key)))
    throw new Error("must not be (or contain) a master key");
  return secret;
}

export function loadAuthConfig(env: NodeJS.ProcessEnv = process.env) {
  const config = loadConfig(authConfigShape, env);
  const problems: string[] = [];
  let masterKeys: ReturnType<typeof parseMasterKeys> = [];
  try {
    masterKeys = parseMasterKeys(config.MASTER_KEYS);
  } catch (e) {
    problems.push(`SPOOL_MASTER_KEYS: ${(e as Error).message}`);
  }
  let tokenSecret: Buffer = Buffer.alloc(0);
  try {
    tokenSecret = parseTokenSecret(config.TOKEN_SECRET, masterKeys);
  } catch (e) {
    problems.push(`SPOOL_TOKEN_SECRET: ${(e as Error).message}`);
  }
  const production = config.ENV === "production";
  const bootstrapPassword = config.BOOTSTRAP_ADMIN_PASSWORD;
  if (production && DEFAULT_BOOTSTRAP_PASSWORDS.has(foldPassword(bootstrapPassword))) {
    problems.push("SPOOL_BOOTSTRAP_ADMIN_PASSWORD: a default password is refused in production");
  } else {
    if (production && [...bootstrapPassword].length < 16) {
      problems.push("SPOOL_BOOTSTRAP_ADMIN_PASSWORD: at least 16 characters in production");
    }
    // The same policy as every other password, in every mode (bootstrap would refuse it later anyway).
    const problem = passwordProblem(bootstrapPassword, {
      minScore: config.PASSWORD_MIN_SCORE,
      userInputs: [config.BOOTSTRAP_ADMIN_EMAIL, config.BOOTSTRAP_ORG_SLUG, config.BOOTSTRAP_ORG_NAME],
    });
    if (problem) problems.push(`SPOOL_BOOTSTRAP_ADMIN_PASSWORD: ${problem}`);
  }
  if (config.SIGNING_KEY_OVERLAP_SECONDS < config.ACCESS_TOKEN_TTL_SECONDS) {
    problems.push("SPOOL_SIGNING_KEY_OVERLAP_SECONDS: must be at least SPOOL_ACCESS_TOKEN_TTL_SECONDS");
  }
  // A token must expire before its key retires: no token outlives the overlap of the key that signed it.
  if (config.SIGNING_KEY_OVERLAP_SECONDS < config.SERVICE_TOKEN_TTL_SECONDS) {
    problems.push("SPOOL_SIGNING_KEY_OVERLAP_SECONDS: must be at least SPOOL_SERVICE_TOKEN_TTL_SECONDS");
  }
  if (config.REFRESH_IDLE_SECONDS > config.REFRESH_ABSOLUTE_SECONDS) {
    problems.push("SPOOL_REFRESH_IDLE_SECONDS: must not exceed SPOOL_REFRESH_ABSOLUTE_SECONDS");
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return { ...config, masterKeys, tokenSecret };
}

/** The login throttle's limits, in the units LoginThrottle takes. */
export function throttleLimits(config: AuthConfig) {
  return {
    accountIpFailures: config.THROTTLE_ACCOUNT_IP_FAILURES,
    blockBaseMs: config.THROTTLE_BLOCK_BASE_SECONDS * 1000,
    blockMaxMs: config.THROTTLE_BLOCK_MAX_SECONDS * 1000,
    accountPerHour: config.THROTTLE_ACCOUNT_PER_HOUR,
    ipPerDay: config.THROTTLE_IP_PER_DAY,
  };
}

/** Token and session lifetimes, in the units Sessions takes. */
export function sessionPolicy(config: AuthConfig) {
  return {
    accessTokenTtlSeconds: config.ACCESS_TOKEN_TTL_SECONDS,
    refreshIdleMs: config.REFRESH_IDLE_SECONDS * 1000,
    refreshAbsoluteMs: config.REFRESH_ABSOLUTE_SECONDS * 1000,
    refreshGraceMs: config.REFRESH_GRACE_MS,
  };
}

/** The organisation and operator bootstrap creates when the log has none. */
export function bootstrapSettings(config: AuthConfig) {
  return {
    orgName: config.BOOTSTRAP_ORG_NAME,
    orgSlug: config.BOOTSTRAP_ORG_SLUG,
    adminEmail: config.BOOTSTRAP_ADMIN_EMAIL,
    adminPassword: config.BOOTSTRAP_ADMIN_PASSWORD,
  };
}
