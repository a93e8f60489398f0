import { readFileSync } from "node:fs";
import { BlockList, isIP, isIPv6 } from "node:net";
import { z } from "zod";
import { createLogger, registerSecret } from "./logger.js";
import { schemaNameProblem } from "./postgres.js";

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
  const warnings = resolveListenHosts(config as Record<string, unknown>, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  for (const [key, schema] of Object.entries(shape)) {
    const value = (config as Record<string, unknown>)[key];
    if (isSecretField(schema) && typeof value === "string") {
      registerSecret(value);
    }
  }
  if (warnings.length > 0) {
    // No service logger exists yet; the warning must reach the log anyway, whatever the level.
    const level = (config as { LOG_LEVEL?: string }).LOG_LEVEL === "silent" ? "silent" : "warn";
    const service = (config as { SERVICE_NAME?: string }).SERVICE_NAME ?? "config";
    const logger = createLogger({ service, level });
    for (const w of warnings) logger.warn(w, "listening on a non-loopback address outside production");
  }
  return config;
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

/** Whether a listen address accepts connections from this machine only. */
export function isLoopbackHost(host: string): boolean {
  const h = host
    .trim()
    .replace(/^\[(.*)\]$/, "$1")
    .toLowerCase();
  if (h === "localhost") return true;
  if (!isIP(h)) return false; // a name could resolve anywhere
  return LOOPBACK.check(h, isIPv6(h) ? "ipv6" : "ipv4");
}

const LISTEN_HOSTS = ["GRPC_HOST", "METRICS_HOST"] as const;

/**
 * Fills unset listen addresses by mode (loopback outside production, every
 * interface in production) and refuses a non-loopback address outside
 * production unless ALLOW_NON_LOOPBACK is set: a development or test process
 * has weak secrets and verbose errors, and must not be silently reachable
 * from the network. Returns the warnings to log for allowed exceptions.
 */
function resolveListenHosts(
  config: Record<string, unknown>,
  problems: string[],
): { variable: string; host: string; env: string }[] {
  const warnings: { variable: string; host: string; env: string }[] = [];
  const production = config.ENV === "production";
  const env = typeof config.ENV === "string" ? config.ENV : "development";
  for (const key of LISTEN_HOSTS) {
    const host = config[key];
    if (typeof host !== "string") continue;
    if (host.trim() === "") {
      config[key] = production ? "0.0.0.0" : "127.0.0.1";
      continue;
    }
    if (production || isLoopbackHost(host)) continue;
    const variable = ENV_PREFIX + key;
    if (config.ALLOW_NON_LOOPBACK === true) {
      warnings.push({ variable, host, env });
    } else {
      problems.push(
        `${variable}: not a loopback address; ${env} mode listens on loopback only ` +
          `(set ${ENV_PREFIX}ALLOW_NON_LOOPBACK=true to listen there anyway, or use production mode)`,
      );
    }
  }
  return warnings;
}

/** Variables every service shares. */
export const baseConfigShape = {
  ENV: z.enum(["development", "test", "production"]).default("development"),
  SERVICE_NAME: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  NATS_URL: z.string().min(1).default("nats://127.0.0.1:4222"),
  /**
   * nats.js async stack traces (two Error objects per request). Off: the kit
   * annotates failed requests at its own call sites instead (withNatsContext).
   */
  NATS_ASYNC_TRACES: envBoolean.default(false),
  DATABASE_URL: z.string().min(1).default("postgres://postgres@127.0.0.1:5432/spool"),
  /**
   * The service's own PostgreSQL schema for its projections, checkpoints and
   * dead letters (created at start if missing). Unset: the service's name
   * (`auth`, `generation_stream`). Two services must never share one.
   */
  DATABASE_SCHEMA: z
    .string()
    .superRefine((name, ctx) => {
      const problem = schemaNameProblem(name);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    })
    .optional(),
  REDIS_URL: z.string().min(1).default("redis://127.0.0.1:6379"),
  /** Prefix for stream and subject names, so environments can share one NATS server. */
  STREAM_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]*$/, "letters, digits, '_' and '-' only")
    .default(""),
  /**
   * Listen addresses. Unset: loopback in development and test, 0.0.0.0 in
   * production. Development and test refuse any other address unless
   * ALLOW_NON_LOOPBACK is set, and then warn at start.
   */
  GRPC_HOST: z.string().default(""),
  METRICS_HOST: z.string().default(""),
  ALLOW_NON_LOOPBACK: envBoolean.default(false),
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
  /**
   * Largest request metadata (all headers, as HTTP/2 counts them) a call may
   * carry; larger calls get RESOURCE_EXHAUSTED. At most 64 KiB: HTTP/2 closes
   * the connection over a single header field beyond that anyway.
   */
  GRPC_MAX_METADATA_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .max(64 * 1024)
    .default(16 * 1024),
};
