import { Writable } from "node:stream";
import { type DestinationStream, type Logger, type LoggerOptions, pino } from "pino";

export type { Logger } from "pino";

// Keys whose values are credentials wherever they appear in a log object.
const SENSITIVE_KEYS = [
  "password",
  "newPassword",
  "currentPassword",
  "token",
  "accessToken",
  "refreshToken",
  "idToken",
  "access_token",
  "refresh_token",
  "secret",
  "clientSecret",
  "client_secret",
  "apiKey",
  "api_key",
  "authorization",
  "Authorization",
  "cookie",
  "masterKey",
  "privateKey",
];

/** Paths pino redacts: the keys at the top level and up to two levels deep. */
export const REDACT_PATHS = SENSITIVE_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`]);

/** A credential shown at most as its first and last four characters. */
export function maskSecret(value: unknown): string {
  if (typeof value !== "string") return "[redacted]";
  if (value.length < 16) return "[redacted]";
  return `${value.slice(0, 4)}…${value.slice(-4)}`;
}

/**
 * Secret values known to the process (from configuration). Every log line is
 * scrubbed of them before it is written, whatever key or message they hide in.
 */
const knownSecrets = new Set<string>();

export function registerSecret(value: string): void {
  // Very short values would scrub ordinary words; config refuses them as secrets anyway.
  if (value.length >= 8) knownSecrets.add(value);
}

function scrub(line: string): string {
  let out = line;
  for (const s of knownSecrets) {
    if (out.includes(s)) out = out.split(s).join(maskSecret(s));
  }
  return out;
}

/** Wraps a destination so no registered secret reaches it. */
function scrubbing(dest: DestinationStream): DestinationStream {
  return new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      dest.write(scrub(chunk.toString()));
      cb();
    },
  });
}

export interface LoggerConfig {
  service: string;
  level?: string;
  /** Where lines go (default stdout). Tests pass a capture stream. */
  destination?: DestinationStream;
}

export function createLogger(config: LoggerConfig): Logger {
  const options: LoggerOptions = {
    level: config.level ?? "info",
    base: { service: config.service },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT_PATHS, censor: (value: unknown) => maskSecret(value) },
    formatters: { level: (label) => ({ level: label }) },
  };
  return pino(options, scrubbing(config.destination ?? pino.destination(1)));
}
