// Databases, streams and machine facts for the run. Everything the bench
// creates is named after the run and removed at the end.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import os from "node:os";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import postgres from "postgres";

/** A short, unique prefix for this run's streams and subjects. */
export function runPrefix(): string {
  return `bench${randomBytes(3).toString("hex")}`;
}

export function databaseUrl(adminUrl: string, name: string): string {
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Drops and recreates a database (names are validated by the config). */
export async function recreateDatabase(adminUrl: string, name: string): Promise<string> {
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  return databaseUrl(adminUrl, name);
}

export async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

/** Deletes every stream whose name starts with `start` (a run's prefixes are unique). */
export async function deleteStreams(jsm: JetStreamManager, start: string): Promise<string[]> {
  const deleted: string[] = [];
  for await (const name of jsm.streams.names()) {
    if (name.startsWith(start)) {
      await jsm.streams.delete(name);
      deleted.push(name);
    }
  }
  return deleted;
}

export interface Machine {
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  platform: string;
  natsServer: string;
  natsJetStream: string;
  postgres: string;
  postgresSettings: Record<string, string>;
}

/** One line for the progress log. */
export function machineText(m: Machine): string {
  return (
    `${m.cpus} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB, Node ${m.node}, ` +
    `nats-server ${m.natsServer}, PostgreSQL ${m.postgres}`
  );
}

export async function describeMachine(nc: NatsConnection, adminUrl: string): Promise<Machine> {
  const info = nc.info;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  let pgVersion = "unknown";
  const settings: Record<string, string> = {};
  try {
    const [v] = await admin<{ server_version: string }[]>`SHOW server_version`;
    pgVersion = v?.server_version ?? pgVersion;
    const rows = await admin<{ name: string; setting: string; unit: string | null }[]>`
      SELECT name, setting, unit FROM pg_settings
      WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'wal_level', 'max_connections')`;
    for (const r of rows) settings[r.name] = r.unit ? `${r.setting} × ${r.unit}` : r.setting;
  } finally {
    await admin.end();
  }
  return {
    cpus: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? "unknown",
    memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    node: process.version,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    natsServer: info?.version ?? "unknown",
    natsJetStream: info?.jetstream ? "enabled" : "disabled",
    postgres: pgVersion,
    postgresSettings: settings,
  };
}

/** The current git commit, when the bench runs inside a checkout. */
export function gitCommit(): string | undefined {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
  } catch {
    return undefined;
  }
}
