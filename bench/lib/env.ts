// Settings from the environment and the servers to run against, the same way
// in every benchmark.
import { type InfraUrls, urlsFromEnv } from "@spool/testing";

/** An integer setting: the default when unset or empty, `_` allowed as a digit separator. */
export function envInt(
  name: string,
  fallback: number,
  min: number,
  env: NodeJS.ProcessEnv = process.env,
): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw.replaceAll("_", ""));
  if (!Number.isSafeInteger(n) || n < min) {
    throw new Error(`${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

/** A switch: on for "1" or "true". */
export function envFlag(name: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env[name];
  return v === "1" || v === "true";
}

/** The servers from the SPOOL_TEST_* variables, else the local ones on their default ports. */
export function infraUrls(): InfraUrls {
  const given = urlsFromEnv();
  return {
    natsUrl: given.natsUrl ?? "nats://127.0.0.1:4222",
    databaseUrl: given.databaseUrl ?? "postgres://postgres@127.0.0.1:5432/postgres",
    redisUrl: given.redisUrl ?? "redis://127.0.0.1:6379",
  };
}

/** Progress lines on stderr, tagged with the benchmark's name; stdout keeps the results. */
export function progressLog(tag: string): (message: string) => void {
  return (message) => process.stderr.write(`[${tag}] ${message}\n`);
}
