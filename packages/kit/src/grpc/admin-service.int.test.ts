// AdminService over fake consumers and the real PostgreSQL dead-letter table.
import { type Client, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { AdminServiceService, ProjectionState } from "@spool/proto/spool/admin/v1/admin.js";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { FakeConsumer } from "../../test/grpc-fakes.js";
import { callError, clientFor, unaryCall } from "../../test/grpc-probe.js";
import { counterProjection, Ledger, slice } from "../../test/projector-counter.js";
import { DeadLetterStore } from "../dead-letters.js";
import { PermissionDeniedError } from "../errors.js";
import { Headers } from "../events.js";
import { createLogger } from "../logger.js";
import { connectNats } from "../nats.js";
import { createPool, type Sql } from "../postgres.js";
import { Projector } from "../projector/index.js";
import type { AdminAuthorizer } from "./admin-service.js";
import { GrpcApp } from "./app.js";
import { readErrorDetails } from "./status.js";

const infra = useInfra("grpcadmin");
let sql: Sql;
let deadLetters: DeadLetterStore;
let app: GrpcApp;
let client: Client;
let projection: FakeConsumer;
let reactor: FakeConsumer;
let halted: FakeConsumer;
const authorizeCalls: string[] = [];

// Refuses callers flagged in metadata, so the hook is proven to run before the work.
const authorize: AdminAuthorizer = (ctx, rpc) => {
  authorizeCalls.push(rpc);
  if (ctx.metadata.get("x-test-deny").length > 0) throw new PermissionDeniedError("admin role required");
};

beforeAll(async () => {
  sql = createPool({ url: infra().databaseUrl, max: 4 });
  deadLetters = new DeadLetterStore(sql);
  await deadLetters.migrate();
  projection = new FakeConsumer({ name: "orders", rebuildable: true, deadLetters });
  reactor = new FakeConsumer({
    name: "mailer",
    deadLetters,
    status: { checkpoint: 2 ** 40, head: 2 ** 40 + 5 },
  });
  halted = new FakeConsumer({
    name: "ledger",
    status: {
      state: "halted",
      strict: true,
      lastError: "cannot apply event: TypeError at /srv/spool/services/auth/src/ledger.ts:12:3",
      rebuild: { targetVersion: 3, applied: 7, head: 9, startedAt: new Date(1_700_000_000_000) },
    },
  });
  app = new GrpcApp({
    name: "grpc-admin-test",
    logger: createLogger({ service: "grpc-admin-test", level: "silent" }),
    host: "127.0.0.1",
    port: 0,
    maxReceiveBytes: 1 << 20,
    maxSendBytes: 1 << 20,
    shutdownGraceMs: 2_000,
  });
  app
    .addConsumer(projection)
    .addConsumer(reactor)
    .addConsumer(halted)
    .addAdminService({ deadLetters, authorize });
  client = clientFor(`127.0.0.1:${await app.start()}`);
});

afterAll(async () => {
  client?.close();
  await app?.stop("test over");
  await sql?.end();
});

const rpc = AdminServiceService;

describe("projections", () => {
  it("lists every consumer with its status mapped to the proto", async () => {
    const { response } = await unaryCall(client, rpc.listProjections, {});
    expect(response.projections.map((p) => p.name)).toEqual(["orders", "mailer", "ledger"]);
    expect(response.projections[0]).toMatchObject({
      stream: "TEST_EX",
      state: ProjectionState.PROJECTION_STATE_RUNNING,
      checkpoint: 10n,
      head: 12n,
      lag: 2n,
      version: 1,
      strict: false,
      lastError: "",
    });
    expect(response.projections[1]).toMatchObject({ checkpoint: 2n ** 40n, head: 2n ** 40n + 5n });
  });

  it("gets one, with rebuild progress and a last error stripped of server paths", async () => {
    const { response } = await unaryCall(client, rpc.getProjection, { name: "ledger" });
    expect(response.projection).toMatchObject({
      state: ProjectionState.PROJECTION_STATE_HALTED,
      strict: true,
      rebuild: { targetVersion: 3, applied: 7n, head: 9n, startedAtMs: 1_700_000_000_000n },
    });
    expect(response.projection?.lastError).toBe("cannot apply event: TypeError at <path>:12:3");
  });

  it("answers NOT_FOUND for an unknown name and INVALID_ARGUMENT for none", async () => {
    const unknown = await callError(unaryCall(client, rpc.getProjection, { name: "nope" }));
    expect(status[unknown.code]).toBe("NOT_FOUND");
    const empty = await callError(unaryCall(client, rpc.getProjection, { name: "" }));
    expect(status[empty.code]).toBe("INVALID_ARGUMENT");
    expect(readErrorDetails(empty.metadata).violations).toEqual([{ field: "name", description: "required" }]);
  });

  it("starts a rebuild once; a second, or one of a consumer without read model, is FAILED_PRECONDITION", async () => {
    const { response } = await unaryCall(client, rpc.rebuildProjection, { name: "orders" });
    expect(response.targetVersion).toBe(2);
    const again = await callError(unaryCall(client, rpc.rebuildProjection, { name: "orders" }));
    expect(status[again.code]).toBe("FAILED_PRECONDITION");
    expect(again.details).toBe("orders is already rebuilding into v2");
    const reactorRebuild = await callError(unaryCall(client, rpc.rebuildProjection, { name: "mailer" }));
    expect(status[reactorRebuild.code]).toBe("FAILED_PRECONDITION");
    const unknown = await callError(unaryCall(client, rpc.rebuildProjection, { name: "nope" }));
    expect(status[unknown.code]).toBe("NOT_FOUND");
    const { response: after } = await unaryCall(client, rpc.getProjection, { name: "orders" });
    expect(after.projection?.state).toBe(ProjectionState.PROJECTION_STATE_REBUILDING);
  });
});

let sequence = 0;
async function addDeadLetter(consumer: string, error = "boom"): Promise<void> {
  sequence += 1;
  const headers = natsHeaders();
  headers.set(Headers.EventType, "spool.example.v1.CounterIncremented");
  await deadLetters.add({
    consumer,
    stream: "TEST_EX",
    attempts: 5,
    error,
    message: { subject: `ex.counter.${sequence}`, seq: sequence, data: new Uint8Array([1, 2, 3]), headers },
  });
}

describe("dead letters", () => {
  beforeEach(async () => {
    await sql`TRUNCATE spool_dead_letters`;
    projection.replayError = undefined;
  });

  it("lists newest first across pages with opaque tokens, filtered by consumer", async () => {
    for (let i = 0; i < 5; i++) await addDeadLetter("orders");
    for (let i = 0; i < 2; i++) await addDeadLetter("mailer");
    const seen: string[] = [];
    let token = "";
    const pageSizes: number[] = [];
    do {
      const { response } = await unaryCall(client, rpc.listDeadLetters, {
        consumer: "orders",
        includeReplayed: false,
        pageSize: 2,
        pageToken: token,
      });
      pageSizes.push(response.deadLetters.length);
      seen.push(...response.deadLetters.map((d) => d.id));
      expect(response.deadLetters.every((d) => d.consumer === "orders")).toBe(true);
      token = response.nextPageToken;
      expect(token).not.toMatch(/^\d+$/);
    } while (token);
    expect(pageSizes).toEqual([2, 2, 1]);
    expect(seen.map(Number)).toEqual([...seen.map(Number)].sort((a, b) => b - a));
    expect(new Set(seen).size).toBe(5);

    const all = await unaryCall(client, rpc.listDeadLetters, {
      consumer: "",
      includeReplayed: false,
      pageSize: 0,
      pageToken: "",
    });
    expect(all.response.deadLetters).toHaveLength(7);
    expect(all.response.nextPageToken).toBe("");
    expect(all.response.deadLetters[0]).toMatchObject({
      stream: "TEST_EX",
      eventType: "spool.example.v1.CounterIncremented",
      attempts: 5,
      error: "boom",
      replayedAtMs: 0n,
    });
    expect(all.response.deadLetters[0]?.failedAtMs).toBeGreaterThan(0n);
  });

  it("refuses bad page sizes and tokens with INVALID_ARGUMENT", async () => {
    for (let i = 0; i < 3; i++) await addDeadLetter("orders");
    const list = (pageSize: number, pageToken: string, consumer = "orders") =>
      unaryCall(client, rpc.listDeadLetters, { consumer, includeReplayed: false, pageSize, pageToken });
    for (const size of [-1, 501]) {
      const err = await callError(list(size, ""));
      expect(status[err.code]).toBe("INVALID_ARGUMENT");
      expect(readErrorDetails(err.metadata).violations[0]?.field).toBe("page_size");
    }
    expect((await list(500, "")).response.deadLetters).toHaveLength(3);
    const { response } = await list(1, "");
    for (const bad of ["garbage!", "MTIz", Buffer.from('{"v":1,"after":"x"}').toString("base64url")]) {
      const err = await callError(list(1, bad));
      expect(status[err.code]).toBe("INVALID_ARGUMENT");
      expect(readErrorDetails(err.metadata).violations[0]?.field).toBe("page_token");
    }
    // A token is only good for the filters it was issued with.
    const otherFilter = await callError(list(1, response.nextPageToken, "mailer"));
    expect(status[otherFilter.code]).toBe("INVALID_ARGUMENT");
    expect((await list(1, response.nextPageToken)).response.deadLetters).toHaveLength(1);
  });

  it("replays through the entry's consumer, once", async () => {
    await addDeadLetter("orders");
    const [entry] = (await deadLetters.list({ limit: 1 })).items;
    const { response } = await unaryCall(client, rpc.replayDeadLetter, { id: entry!.id });
    expect(projection.replayed).toContain(entry!.id);
    expect(response.deadLetter).toMatchObject({ id: entry!.id, consumer: "orders" });
    expect(response.deadLetter?.replayedAtMs).toBeGreaterThan(0n);
    const again = await callError(unaryCall(client, rpc.replayDeadLetter, { id: entry!.id }));
    expect(status[again.code]).toBe("FAILED_PRECONDITION");
    const listed = await unaryCall(client, rpc.listDeadLetters, {
      consumer: "orders",
      includeReplayed: false,
      pageSize: 0,
      pageToken: "",
    });
    expect(listed.response.deadLetters).toHaveLength(0);
  });

  it("lets exactly one of two parallel replays of an entry succeed", async () => {
    await addDeadLetter("mailer");
    const [entry] = (await deadLetters.list({ limit: 1 })).items;
    const results = await Promise.allSettled([
      unaryCall(client, rpc.replayDeadLetter, { id: entry!.id }),
      unaryCall(client, rpc.replayDeadLetter, { id: entry!.id }),
    ]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const rejected = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(status[(rejected.reason as ServiceError).code]).toBe("FAILED_PRECONDITION");
    // A lost race is not a failed replay: the entry's attempts are untouched.
    expect((await deadLetters.get(entry!.id))?.attempts).toBe(5);
  });

  it("records a failed replay on the entry and answers FAILED_PRECONDITION without the error text", async () => {
    await addDeadLetter("orders");
    const [entry] = (await deadLetters.list({ limit: 1 })).items;
    projection.replayError = new Error("still broken: column x does not exist at /srv/spool/db.ts");
    const err = await callError(unaryCall(client, rpc.replayDeadLetter, { id: entry!.id }));
    expect(status[err.code]).toBe("FAILED_PRECONDITION");
    expect(err.details).not.toContain("still broken");
    const stored = await deadLetters.get(entry!.id);
    expect(stored).toMatchObject({ attempts: 6, replayedAt: undefined });
    expect(stored?.error).toContain("still broken");
    const listed = await unaryCall(client, rpc.listDeadLetters, {
      consumer: "orders",
      includeReplayed: false,
      pageSize: 0,
      pageToken: "",
    });
    expect(listed.response.deadLetters[0]?.error).toBe("still broken: column x does not exist at <path>");
  });

  it("answers NOT_FOUND for an unknown id and FAILED_PRECONDITION for a consumer this service does not run", async () => {
    for (const id of ["999999", "not-a-number"]) {
      const err = await callError(unaryCall(client, rpc.replayDeadLetter, { id }));
      expect(status[err.code]).toBe("NOT_FOUND");
    }
    await addDeadLetter("retired-projection");
    const [entry] = (await deadLetters.list({ limit: 1 })).items;
    const err = await callError(unaryCall(client, rpc.replayDeadLetter, { id: entry!.id }));
    expect(status[err.code]).toBe("FAILED_PRECONDITION");
    expect(err.details).toBe("consumer retired-projection does not run in this service");
  });
});

describe("RebuildProjection over a real projector", () => {
  it("lets exactly one of two parallel rebuilds start; the other is FAILED_PRECONDITION, as admin.proto says", async () => {
    const nc = await connectNats({ url: infra().natsUrl, name: "admin-rebuild-test" });
    const s = await slice(nc, infra(), "adminrebuild");
    // Rebuild batches wait here, so the rebuild is still running when the calls arrive.
    const gate = Promise.withResolvers<void>();
    const p = new Projector(counterProjection().definition, {
      store: s.store,
      sql: s.sql,
      deadLetters: s.deadLetters,
      logger: createLogger({ service: "admin-rebuild-test", level: "silent" }),
      batchSize: 5,
      standbyRetryMs: 100,
      pollIntervalMs: 100,
      onBatchCommitted: (batch) => (batch.rebuild ? gate.promise : undefined),
    });
    const real = new GrpcApp({
      name: "admin-rebuild-test",
      logger: createLogger({ service: "admin-rebuild-test", level: "silent" }),
      host: "127.0.0.1",
      port: 0,
      maxReceiveBytes: 1 << 20,
      maxSendBytes: 1 << 20,
      shutdownGraceMs: 2_000,
    });
    real.addConsumer(p).addAdminService({ deadLetters: s.deadLetters, authorize: () => {} });
    const realClient = clientFor(`127.0.0.1:${await real.start()}`);
    try {
      const ledger = new Ledger();
      await ledger.appendMany(s.store, 30, { parallel: 10 });
      await p.start();
      await p.waitFor(ledger.lastSequence, 10_000);

      const rebuild = () => unaryCall(realClient, rpc.rebuildProjection, { name: "counter" });
      const results = await Promise.allSettled([rebuild(), rebuild()]);
      const ok = results.filter((r) => r.status === "fulfilled");
      expect(ok).toHaveLength(1);
      expect(ok[0]?.value.response.targetVersion).toBe(2);
      const refused = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      expect(status[(refused.reason as ServiceError).code]).toBe("FAILED_PRECONDITION");
      expect((refused.reason as ServiceError).details).toContain("already rebuilding to version 2");
      const third = await callError(rebuild());
      expect(status[third.code]).toBe("FAILED_PRECONDITION");

      // Once the rebuild has swapped in, the next one may start.
      gate.resolve();
      await expect
        .poll(async () => (await p.status()).rebuild === undefined && (await p.status()).version === 2, {
          timeout: 20_000,
        })
        .toBe(true);
      expect((await rebuild()).response.targetVersion).toBe(3);
    } finally {
      realClient.close();
      await real.stop("test over");
      await s.sql.end();
      await nc.close();
    }
  });
});

describe("request validation at the edge", () => {
  it("refuses NUL and control characters in ListDeadLetters' consumer with INVALID_ARGUMENT naming it", async () => {
    for (const consumer of ["orders\u0000", "or\u001bders", "\u202eorders"]) {
      const err = await callError(
        unaryCall(client, rpc.listDeadLetters, {
          consumer,
          includeReplayed: false,
          pageSize: 0,
          pageToken: "",
        }),
      );
      expect(status[err.code]).toBe("INVALID_ARGUMENT");
      expect(readErrorDetails(err.metadata).violations.map((v) => v.field)).toEqual(["consumer"]);
    }
  });
});

describe("authorization hook", () => {
  it("runs before every admin RPC and its refusal is the caller's answer", async () => {
    authorizeCalls.length = 0;
    const metadata = new Metadata();
    metadata.set("x-test-deny", "1");
    const err = await callError(unaryCall(client, rpc.rebuildProjection, { name: "mailer" }, { metadata }));
    expect(status[err.code]).toBe("PERMISSION_DENIED");
    expect(err.details).toBe("admin role required");
    await callError(unaryCall(client, rpc.listProjections, {}, { metadata }));
    expect(authorizeCalls).toEqual(["RebuildProjection", "ListProjections"]);
  });
});
