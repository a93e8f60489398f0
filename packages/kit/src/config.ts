import { readFileSync } from "node:fs";
import { z } from "zod";
import { registerSecret } from "./logger.js";

export const ENV_PREFIX = "SPOOL_";

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

const secretFields = new WeakSet<z.core.$ZodType>();

/**
 * Marks a schema field as a secret: it may come from `SPOOL_<NAME>_FILE`
 * (a mounted secret file), and its value is scrubbed from every log line.
 */
export function secret<T extends z.ZodType>(schema: T): T {
  secretFields.add(schema);
  return schema;
}

/** A boolean from the environment: true/false/1/0/yes/no. */
export const envBoolean = z
  .enum(["true", "false", "1", "0", "yes", "no"])
  .transform((v) => v === "true" || v === "1" || v === "yes");

function unwrap(schema: z.core.$ZodType): z.core.$ZodType {
  let s = schema;
  // Optional/default wrappers hide the field's own schema (and its secret mark).
  while (s instanceof z.ZodOptional || s instanceof z.ZodDefault || s instanceof z.ZodNullable) {
    s = s.unwrap() as z.core.$ZodType;
  }
  return s;
}

function isSecretField(schema: z.core.$ZodType | undefined): boolean {
  return schema !== undefined && (secretFields.has(schema) || secretFields.has(unwrap(schema)));
}

/**
 * Reads a service's configuration from the environment. Schema keys are the
 * variable names without the prefix (`NATS_URL` is read from `SPOOL_NATS_URL`).
 * For a secret field, `SPOOL_<NAME>_FILE` names a file holding the value.
 * Every bad or missing variable is reported at once, by its full name; values
 * are never echoed back.
 */
export function loadConfig<S extends z.ZodRawShape>(
  shape: S,
  env: NodeJS.ProcessEnv = process.env,
): z.infer<z.ZodObject<S>> {
  const raw: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [key, schema] of Object.entries(shape)) {
    const name = ENV_PREFIX + key;
    const direct = env[name];
    const file = env[`${name}_FILE`];
    const isSecret = isSecretField(schema);
    if (file !== undefined && !isSecret) {
      problems.push(`${name}_FILE: ${name} is not a secret; set ${name} directly`);
      continue;
    }
    if (file !== undefined && direct !== undefined) {
      problems.push(`${name} and ${name}_FILE are both set; set one`);
      continue;
    }
    if (file !== undefined) {
      try {
        raw[key] = readFileSync(file, "utf8").replace(/\r?\n$/, "");
      } catch (e) {
        const reason = (e as NodeJS.ErrnoException).code ?? "unreadable";
        problems.push(`${name}_FILE: cannot read the secret file (${reason})`);
      }
      continue;
    }
    if (direct !== undefined && direct !== "") raw[key] = direct;
  }
  const result = z.object(shape).safeParse(raw);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const key = String(issue.path[0] ?? "");
      const name = ENV_PREFIX + key;
      const missing = raw[key] === undefined;
      const isSecret = isSecretField(shape[key]);
      problems.push(
        missing
          ? `${name} is required but not set${isSecret ? ` (or set ${name}_FILE)` : ""}`
          : `${name}: ${issue.message}`,
      );
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const config = result.data as z.infer<z.ZodObject<S>>;
  for (const [key, schema] of Object.entries(shape)) {
    const value = (config as Record<string, unknown>)[key];
    if (isSecretField(schema) && typeof value === "string") {
      registerSecret(value);
    }
  }
  return config;
}

/** Variables every service shares. */
export const baseConfigShape = {
  ENV: z.enum(["development", "test", "production"]).default("development"),
  SERVICE_NAME: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  NATS_URL: z.string().min(1).default("nats://127.0.0.1:4222"),
  DATABASE_URL: z.string().min(1).default("postgres://postgres@127.0.0.1:5432/spool"),
  REDIS_URL: z.string().min(1).default("redis://127.0.0.1:6379"),
  /** Prefix for stream and subject names, so environments can share one NATS server. */
  STREAM_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]*$/, "letters, digits, '_' and '-' only")
    .default(""),
  GRPC_HOST: z.string().default("0.0.0.0"),
  GRPC_PORT: z.coerce.number().int().min(0).max(65535).default(50051),
  METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
  /** How long in-flight RPCs may take to finish after SIGTERM. */
  SHUTDOWN_GRACE_MS: z.coerce.number().int().min(0).max(600_000).default(10_000),
  GRPC_MAX_RECEIVE_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .max(64 * 1024 * 1024)
    .default(4 * 1024 * 1024),
  GRPC_MAX_SEND_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .max(64 * 1024 * 1024)
    .default(4 * 1024 * 1024),
  DATABASE_POOL_MAX: z.coerce.number().int().min(1).max(200).default(10),
  /** Longest a unary RPC may run, whatever the client's deadline. */
  GRPC_MAX_UNARY_MS: z.coerce.number().int().min(100).max(600_000).default(30_000),
};
