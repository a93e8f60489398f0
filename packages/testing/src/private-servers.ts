// A NATS server of a test's own, to stop, freeze and restart (outage tests):
// the shared servers on the standard ports are never touched.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { credentials, makeGenericClientConstructor } from "@grpc/grpc-js";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { eventually } from "./process.js";

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
      .once("error", reject)
      .listen(0, "127.0.0.1", () => {
        const port = (s.address() as { port: number }).port;
        s.close(() => resolve(port));
      });
  });
}

export interface PrivateNats {
  url: string;
  port: number;
  /** Starts it (again, same port and store directory) and waits until JetStream answers. */
  start(): Promise<void>;
  /** Kills it (SIGKILL by default) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGSTOP: the server keeps its connections but answers nothing. */
  freeze(): void;
  /** SIGCONT after freeze(). */
  thaw(): void;
  /** Kills it and removes its store directory. */
  cleanup(): Promise<void>;
}

function natsServerBinary(): string {
  const fromEnv = process.env.SPOOL_TEST_NATS_SERVER;
  if (fromEnv) return fromEnv;
  return existsSync("/usr/sbin/nats-server") ? "/usr/sbin/nats-server" : "nats-server";
}

/** A nats-server with JetStream on a free port and a temporary store; not started until start(). */
export async function privateNats(): Promise<PrivateNats> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "spool-nats-"));
  const url = `nats://127.0.0.1:${port}`;
  let proc: ChildProcess | undefined;
  const kill = async (signal: NodeJS.Signals = "SIGKILL") => {
    const p = proc;
    proc = undefined;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((resolve) => p.once("exit", resolve));
    p.kill("SIGCONT");
    p.kill(signal);
    await exited;
  };
  return {
    url,
    port,
    start: async () => {
      if (proc) return;
      proc = spawn(natsServerBinary(), ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", dir], {
        stdio: "ignore",
      });
      await eventually(
        async () => {
          const nc = await connect({ servers: url, timeout: 1_000, reconnect: false });
          try {
            await (await jetstreamManager(nc)).getAccountInfo();
            return true;
          } finally {
            await nc.close();
          }
        },
        { what: `private nats-server on ${port} ready`, timeoutMs: 15_000, intervalMs: 100 },
      );
    },
    kill,
    freeze: () => proc?.kill("SIGSTOP"),
    thaw: () => proc?.kill("SIGCONT"),
    cleanup: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Forwards 127.0.0.1:port to target (host:port): a dependency that appears on
 * a port only when the test says so (start-up before PostgreSQL, say).
 */
export async function tcpProxy(
  port: number,
  target: { host: string; port: number },
): Promise<{ close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(target.port, target.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve, reject) =>
    server.once("error", reject).listen(port, "127.0.0.1", resolve),
  );
  return {
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export type HealthStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";
const STATUSES: HealthStatus[] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

// grpc.health.v1.Health/Check by hand: { string service = 1 } in, { ServingStatus status = 1 } out.
const HealthClient = makeGenericClientConstructor(
  {
    check: {
      path: "/grpc.health.v1.Health/Check",
      requestStream: false,
      responseStream: false,
      requestSerialize: (service: string) =>
        service
          ? Buffer.concat([Buffer.from([0x0a, service.length]), Buffer.from(service)])
          : Buffer.alloc(0),
      requestDeserialize: () => "",
      responseSerialize: () => Buffer.alloc(0),
      responseDeserialize: (b: Buffer): HealthStatus =>
        STATUSES[b[0] === 0x08 ? (b[1] ?? 0) : 0] ?? "UNKNOWN",
    },
  },
  "Health",
);

/** The overall health a gRPC server reports (grpc.health.v1 Check of ""), or the error's code name. */
export function grpcHealth(address: string, deadlineMs = 3_000): Promise<HealthStatus | `error ${number}`> {
  const client = new HealthClient(address, credentials.createInsecure());
  return new Promise((resolve) => {
    (client as unknown as { check: (...args: unknown[]) => void }).check(
      "",
      { deadline: Date.now() + deadlineMs },
      (err: { code: number } | null, status: HealthStatus) => {
        client.close();
        resolve(err ? `error ${err.code}` : status);
      },
    );
  });
}
