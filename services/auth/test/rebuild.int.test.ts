import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { credentials, status } from "@grpc/grpc-js";
import { connectNats, createLogger, createPool, EventStore, Namespace, RevocationSet } from "@spool/kit";
import { AdminServiceClient, ProjectionState } from "@spool/proto/spool/admin/v1/admin.js";
import { eventually, useInfra } from "@spool/testing";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, codeOf, startTestAuth, type TestAuth } from "./harness.js";

const infra = useInfra("authrb");
let auth: TestAuth;
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };

beforeAll(async () => {
  auth = await startTestAuth(infra());
});
afterAll(async () => {
  await auth?.stop();
});

describe("projections rebuilt from the AUTH stream", () => {
  it("equal the live ones, row by row, including the revocation set", async () => {
    const c = auth.client;
    const logins = [];
    for (let i = 0; i < 6; i++) logins.push(await call(c.login, c, ADMIN));
    await call(c.logout, c, {}, logins[0]!.tokens!.accessToken);
    await call(c.logout, c, {}, logins[1]!.tokens!.accessToken);
    await call(c.login, c, { ...ADMIN, password: "wrong password for the audit" }).catch(() => undefined);
    const operator = logins[5]!.tokens!.accessToken;

    const sql = createPool({ url: infra().databaseUrl, schema: "auth", max: 2 });
    const checksum = async (view: string, order: string) => {
      const [row] = await sql.unsafe<{ sum: string; n: string }[]>(
        `SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY ${order}), '')) AS sum, count(*) AS n FROM ${view} t`,
      );
      return row!;
    };
    const admin = new AdminServiceClient(`127.0.0.1:${auth.running.port}`, credentials.createInsecure());
    // Admin RPCs are for operators only.
    expect(await codeOf(call(admin.listProjections, admin, {}))).toBe(status.UNAUTHENTICATED);

    for (const [name, view, order] of [
      ["auth_sessions", "auth_sessions", "session_id"],
      ["auth_audit", "auth_audit", "seq, idx"],
    ] as const) {
      await eventually(async () => {
        const p = (await call(admin.getProjection, admin, { name }, operator)).projection!;
        return p.lag === 0n;
      });
      const live = await checksum(view, order);
      expect(Number(live.n)).toBeGreaterThan(0);
      const { targetVersion } = await call(admin.rebuildProjection, admin, { name }, operator);
      await eventually(
        async () => {
          const p = (await call(admin.getProjection, admin, { name }, operator)).projection!;
          return p.version === targetVersion && p.state === ProjectionState.PROJECTION_STATE_RUNNING;
        },
        { what: `${name} rebuilt`, timeoutMs: 20_000 },
      );
      expect(await checksum(view, order)).toEqual(live);
    }

    // The revocation set rebuilt from the log agrees with the sessions projection.
    const nc = await connectNats({ url: infra().natsUrl, name: "rebuild-test" });
    const store = new EventStore(nc, { namespace: new Namespace(infra().streamPrefix) });
    await store.ensureStream({ name: "AUTH", subjects: ["auth.>"] });
    const set = new RevocationSet({ store, logger: createLogger({ service: "t", level: "silent" }) });
    await set.start();
    await set.ready;
    const sessions = await sql<{ session_id: string; revoked: boolean }[]>`
      SELECT session_id, revoked_at IS NOT NULL AS revoked FROM auth_sessions`;
    expect(sessions.filter((s) => s.revoked)).toHaveLength(2);
    for (const s of sessions) expect(set.isRevoked(s.session_id)).toBe(s.revoked);
    await set.stop();
    await nc.close();
    admin.close();
    await sql.end();
  });
});

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

describe("login fails closed without Redis", () => {
  it("answers UNAVAILABLE when Redis is stopped, and recovers when it is back", async () => {
    const port = await freePort();
    const start = () =>
      spawn(
        "redis-server",
        ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        {
          stdio: "ignore",
        },
      );
    let redis = start();
    await eventually(async () => {
      const r = new Redis(`redis://127.0.0.1:${port}`, { lazyConnect: true, maxRetriesPerRequest: 0 });
      r.on("error", () => {});
      try {
        await r.connect();
        return (await r.ping()) === "PONG";
      } finally {
        r.disconnect();
      }
    });
    // Same keys as the running instance: it shares the log (and so the sealed signing keys).
    const own = await startTestAuth(
      infra(),
      {},
      { ...auth.env, SPOOL_REDIS_URL: `redis://127.0.0.1:${port}` },
    );
    try {
      const c = own.client;
      expect(await codeOf(call(c.login, c, ADMIN))).toBeUndefined();
      redis.kill("SIGKILL");
      await new Promise((r) => redis.once("exit", r));
      await eventually(async () => (await codeOf(call(c.login, c, ADMIN))) === status.UNAVAILABLE, {
        what: "login refused with UNAVAILABLE",
        timeoutMs: 10_000,
      });
      redis = start();
      await eventually(async () => (await codeOf(call(c.login, c, ADMIN))) === undefined, {
        what: "login recovered",
        timeoutMs: 15_000,
      });
    } finally {
      await own.stop();
      redis.kill("SIGKILL");
    }
  });
});
