// NATS outages (issue 7 items 14, 15, 17, 18), on a nats-server of this file's
// own: stopped, frozen and restarted while auth runs, or absent when it starts.
import { credentials, type ServiceError, status } from "@grpc/grpc-js";
import { readErrorDetails } from "@spool/kit";
import { AuthServiceClient } from "@spool/proto/spool/auth/v1/auth.js";
import {
  eventually,
  freePort,
  grpcHealth,
  type PrivateNats,
  privateNats,
  runTs,
  tcpProxy,
  useInfra,
} from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authEnv, call, codeOf, startTestAuth } from "./harness.js";

// Two slices: each auth below has a NATS of its own, so it needs its own database too
// (projection checkpoints name stream sequences of one log).
const running = useInfra("authout");
const starting = useInfra("authoutstart");
const startingPg = useInfra("authoutpg");
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };
let nats: PrivateNats;

beforeAll(async () => {
  nats = await privateNats();
});
afterAll(async () => {
  await nats?.cleanup();
});

/** One environment for every auth of the running slice: the log's signing keys are sealed with its master key. */
let runningEnv: Record<string, string> | undefined;
const startRunning = () => {
  runningEnv ??= authEnv(running(), { SPOOL_NATS_URL: nats.url });
  return startTestAuth(running(), {}, runningEnv);
};

const serving = (address: string, want: "SERVING" | "NOT_SERVING", timeoutMs = 15_000) =>
  eventually(async () => (await grpcHealth(address)) === want, { what: `health ${want}`, timeoutMs });

describe("auth while its NATS is away", () => {
  it("health goes NOT_SERVING while NATS is stopped and SERVING after its restart (item 14); a login meanwhile is refused UNAVAILABLE, not left to its deadline (item 18)", async () => {
    await nats.start();
    const auth = await startRunning();
    const c = auth.client;
    const address = `127.0.0.1:${auth.running.port}`;
    try {
      await serving(address, "SERVING");
      expect(await codeOf(call(c.login, c, ADMIN))).toBeUndefined();

      await nats.kill();
      // Before: SERVING throughout (the check was !nc.isClosed(), true while reconnecting).
      await serving(address, "NOT_SERVING", 10_000);
      // Before: the load waited for the reconnect until its request timed out (5 s), then INTERNAL.
      // The deadline is shorter than that timeout: only a refusal at once answers UNAVAILABLE.
      const refused: ServiceError = await call(c.login, c, ADMIN, undefined, 4_000).then(
        () => expect.fail("login succeeded without NATS"),
        (e: ServiceError) => e,
      );
      expect(status[refused.code]).toBe("UNAVAILABLE");
      expect(readErrorDetails(refused.metadata).retryAfterMs).toBeGreaterThan(0);

      await nats.start();
      await serving(address, "SERVING");
      await eventually(async () => (await codeOf(call(c.login, c, ADMIN))) === undefined, {
        what: "login after NATS is back",
        timeoutMs: 15_000,
      });
    } finally {
      await nats.start();
      await auth.stop();
    }
  });

  it("a NATS that stops answering: the request timeout answers UNAVAILABLE with retry info, not INTERNAL (item 17)", async () => {
    await nats.start();
    const auth = await startRunning();
    const c = auth.client;
    const address = `127.0.0.1:${auth.running.port}`;
    try {
      await serving(address, "SERVING");
      expect(await codeOf(call(c.login, c, ADMIN))).toBeUndefined();
      // Frozen, the connection stays up: the JetStream request times out (a TimeoutError).
      nats.freeze();
      const refused: ServiceError = await call(c.login, c, ADMIN, undefined, 20_000).then(
        () => expect.fail("login succeeded with NATS frozen"),
        (e: ServiceError) => e,
      );
      expect(status[refused.code]).toBe("UNAVAILABLE");
      expect(readErrorDetails(refused.metadata).retryAfterMs).toBeGreaterThan(0);
      expect(await grpcHealth(address)).toBe("NOT_SERVING");
      nats.thaw();
      await serving(address, "SERVING");
      expect(await codeOf(call(c.login, c, ADMIN))).toBeUndefined();
    } finally {
      nats.thaw();
      await auth.stop();
    }
  });
});

describe("auth started before its NATS (item 15)", () => {
  it("does not exit: it reports NOT_SERVING, waits, and serves once NATS starts", async () => {
    const own = await privateNats(); // not started yet
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const child = runTs(MAIN, {
      env: authEnv(starting(), {
        SPOOL_NATS_URL: own.url,
        SPOOL_GRPC_PORT: String(port),
        SPOOL_LOG_LEVEL: "info",
      }),
    });
    const client = new AuthServiceClient(address, credentials.createInsecure());
    try {
      // Before: "failed to start" and exit 1 at the first refused connection.
      await child.waitFor(/waiting for NATS/, 60_000);
      await child.waitFor(/"attempt":3/, 30_000);
      expect(child.proc.exitCode).toBeNull();
      expect(await grpcHealth(address)).toBe("NOT_SERVING");

      await own.start();
      await serving(address, "SERVING", 60_000);
      expect(await codeOf(call(client.login, client, ADMIN))).toBeUndefined();

      child.kill("SIGTERM");
      expect(await child.exited).toBe(0);
    } finally {
      client.close();
      child.kill("SIGKILL");
      await own.cleanup();
    }
  });

  it("a SIGTERM while it waits for NATS stops it at once with exit code 0", async () => {
    const own = await privateNats(); // never started
    const child = runTs(MAIN, {
      env: authEnv(starting(), { SPOOL_NATS_URL: own.url, SPOOL_LOG_LEVEL: "info" }),
    });
    try {
      await child.waitFor(/waiting for NATS/, 60_000);
      child.kill("SIGTERM");
      expect(await child.exited).toBe(0);
      expect(child.output()).toMatch(/stopped during start-up/);
    } finally {
      child.kill("SIGKILL");
      await own.cleanup();
    }
  });
});

describe("auth started before its PostgreSQL (item 15)", () => {
  it("does not exit: it reports NOT_SERVING, waits at its first migration, and serves once PostgreSQL answers", async () => {
    const grpcPort = await freePort();
    const pgPort = await freePort();
    const address = `127.0.0.1:${grpcPort}`;
    const real = new URL(startingPg().databaseUrl);
    const unreachable = new URL(real);
    unreachable.port = String(pgPort);
    const child = runTs(MAIN, {
      env: authEnv(startingPg(), {
        SPOOL_DATABASE_URL: unreachable.toString(),
        SPOOL_GRPC_PORT: String(grpcPort),
        SPOOL_LOG_LEVEL: "info",
      }),
    });
    const client = new AuthServiceClient(address, credentials.createInsecure());
    let proxy: { close(): Promise<void> } | undefined;
    try {
      // Before: the dead-letter migration failed and the process exited 1.
      await child.waitFor(/migrate the dead-letter table: dependency unavailable, waiting/, 60_000);
      expect(child.proc.exitCode).toBeNull();
      expect(await grpcHealth(address)).toBe("NOT_SERVING");

      // PostgreSQL "comes up" on that port.
      proxy = await tcpProxy(pgPort, { host: real.hostname, port: Number(real.port || 5432) });
      await serving(address, "SERVING", 60_000);
      expect(await codeOf(call(client.login, client, ADMIN))).toBeUndefined();
      child.kill("SIGTERM");
      expect(await child.exited).toBe(0);
    } finally {
      client.close();
      child.kill("SIGKILL");
      await proxy?.close();
    }
  });
});
