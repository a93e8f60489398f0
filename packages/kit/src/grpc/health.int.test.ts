// Health over the real NATS, PostgreSQL and Redis, and server reflection.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { type Client, Metadata, type MethodDefinition, type ServiceError, status } from "@grpc/grpc-js";
import type { NatsConnection } from "@nats-io/transport-node";
import { eventually, useInfra } from "@spool/testing";
import { service as healthDefinition } from "grpc-health-check";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeConsumer } from "../../test/grpc-fakes.js";
import { clientFor, newRecord, ProbeService, probeService, unaryCall } from "../../test/grpc-probe.js";
import { fileName, reflect } from "../../test/grpc-reflection-client.js";
import { DeadLetterStore } from "../dead-letters.js";
import { createLogger } from "../logger.js";
import { connectNats } from "../nats.js";
import { createPool, type Sql } from "../postgres.js";
import { allowAllAdminCalls } from "./admin-service.js";
import { GrpcApp } from "./app.js";
import { natsCheck, postgresCheck, redisCheck } from "./health.js";
import { readDescriptorSet } from "./reflection.js";
import { readErrorDetails } from "./status.js";

const infra = useInfra("grpchealth");
const lines: string[] = [];
const logger = createLogger({
  service: "grpc-health-test",
  destination: { write: (line: string) => void lines.push(line) },
});
let nc: NatsConnection;
let sql: Sql;
let redis: Redis;
let app: GrpcApp;
let client: Client;
const consumer = new FakeConsumer({ name: "orders-projection", rebuildable: true });

/** admin.proto compiled the way the generate step should ship descriptors (only it: other protos may be mid-edit). */
function buildDescriptorSet(): Uint8Array {
  const protoDir = fileURLToPath(new URL("../../../../proto/", import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), "spool-descriptors-"));
  try {
    const out = join(dir, "spool.binpb");
    execFileSync(
      join(protoDir, "node_modules/.bin/buf"),
      ["build", "--exclude-source-info", "--path", "spool/admin/v1/admin.proto", "-o", out],
      {
        cwd: protoDir,
        stdio: "pipe",
      },
    );
    return readDescriptorSet(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A FileDescriptorSet declaring a service this server does not serve. */
function unservedDescriptorSet(): Uint8Array {
  const file = new BinaryWriter();
  file.tag(1, WireType.LengthDelimited).string("spool/fake/v1/fake.proto");
  file.tag(2, WireType.LengthDelimited).string("spool.fake.v1");
  file.tag(6, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string("Unserved").join();
  return new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(file.finish()).finish();
}

beforeAll(async () => {
  nc = await connectNats({ url: infra().natsUrl, name: "grpc-health-test" });
  sql = createPool({ url: infra().databaseUrl, max: 2 });
  redis = new Redis(infra().redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  const deadLetters = new DeadLetterStore(sql);
  app = new GrpcApp({
    name: "grpc-health-test",
    logger,
    host: "127.0.0.1",
    port: 0,
    maxReceiveBytes: 1 << 20,
    maxSendBytes: 1 << 20,
    shutdownGraceMs: 3_000,
    healthIntervalMs: 100,
    descriptorSets: [buildDescriptorSet(), unservedDescriptorSet()],
  });
  app
    .addHealthCheck(natsCheck(nc))
    .addHealthCheck(postgresCheck(sql))
    .addHealthCheck(redisCheck(redis))
    .addConsumer(consumer)
    .addAdminService({ deadLetters, authorize: allowAllAdminCalls })
    .addService(ProbeService, probeService(newRecord()));
  client = clientFor(`127.0.0.1:${await app.start()}`);
});

afterAll(async () => {
  client?.close();
  await app?.stop("test over");
  redis?.disconnect();
  await sql?.end();
  await nc?.close();
});

interface HealthResponse {
  status: string;
}
const check = healthDefinition.Check as unknown as MethodDefinition<{ service: string }, HealthResponse>;
const echo = ProbeService.echo;

async function healthOf(service: string): Promise<string> {
  return (await unaryCall(client, check, { service })).response.status;
}

describe("health", () => {
  it("is SERVING when NATS, PostgreSQL, Redis and every consumer are fine, overall and per service", async () => {
    expect(await healthOf("")).toBe("SERVING");
    expect(await healthOf("spool.admin.v1.AdminService")).toBe("SERVING");
    expect(await healthOf("spool.test.v1.Probe")).toBe("SERVING");
  });

  it("answers NOT_FOUND for a service it does not serve", async () => {
    await expect(healthOf("spool.nope.v1.Nope")).rejects.toMatchObject({ code: 5 });
  });

  it("turns NOT_SERVING while a consumer is unhealthy, and back", async () => {
    consumer.isHealthy = false;
    await eventually(async () => (await healthOf("")) === "NOT_SERVING", { what: "NOT_SERVING" });
    expect(await healthOf("spool.admin.v1.AdminService")).toBe("NOT_SERVING");
    expect(app.health.current.failing).toEqual(["consumer:orders-projection"]);
    consumer.isHealthy = true;
    await eventually(async () => (await healthOf("")) === "SERVING", { what: "SERVING again" });
  });

  it("turns NOT_SERVING when Redis is gone, and back once it reconnects", async () => {
    redis.disconnect();
    const report = await app.health.refresh();
    expect(report).toEqual({ status: "NOT_SERVING", failing: ["redis"] });
    expect(await healthOf("")).toBe("NOT_SERVING");
    await redis.connect();
    expect((await app.health.refresh()).status).toBe("SERVING");
    expect(await healthOf("")).toBe("SERVING");
  });
});

describe("reflection", () => {
  it.each(["v1", "v1alpha"] as const)("%s lists the admin and health services", async (version) => {
    const { services, error } = await reflect(client, version, { listServices: true });
    expect(error).toBeUndefined();
    expect(services).toEqual(
      expect.arrayContaining(["spool.admin.v1.AdminService", "grpc.health.v1.Health"]),
    );
  });

  it("describes the admin service's file", async () => {
    const { files, error } = await reflect(client, "v1", {
      fileContainingSymbol: "spool.admin.v1.AdminService",
    });
    expect(error).toBeUndefined();
    expect(files.map(fileName)).toContain("spool/admin/v1/admin.proto");
  });

  it("lists only what is served, and says which services it cannot describe", async () => {
    const { services } = await reflect(client, "v1", { listServices: true });
    expect(services).not.toContain("spool.fake.v1.Unserved");
    expect(services).not.toContain("spool.test.v1.Probe");
    const warning = lines.map((l) => JSON.parse(l)).find((l) => l.msg?.startsWith("no descriptors"));
    expect(warning?.services).toEqual(["spool.test.v1.Probe"]);
  });
});

// Issue 7 item 15: a service waiting for its dependencies at start-up answers
// health (NOT_SERVING) rather than refusing connections, and its services
// answer UNAVAILABLE (with retry info) until start() completes.
describe("listen() before start()", () => {
  it("answers NOT_SERVING and refuses calls UNAVAILABLE until start(), then serves", async () => {
    const early = new GrpcApp({
      name: "grpc-early-test",
      logger,
      host: "127.0.0.1",
      port: 0,
      maxReceiveBytes: 1 << 20,
      maxSendBytes: 1 << 20,
      shutdownGraceMs: 1_000,
      healthIntervalMs: 100,
      descriptorSets: [],
    });
    const port = await early.listen();
    const c = clientFor(`127.0.0.1:${port}`);
    try {
      const health = async () => (await unaryCall(c, check, { service: "" })).response.status;
      expect(await health()).toBe("NOT_SERVING");
      // Registered while starting (its dependencies now connected): still refused until start().
      early.addService(ProbeService, probeService(newRecord()));
      const refused = await unaryCall(c, echo, { text: "hi" }).then(
        () => undefined,
        (e: ServiceError) => e,
      );
      expect(refused && status[refused.code]).toBe("UNAVAILABLE");
      expect(readErrorDetails(refused?.metadata).retryAfterMs).toBeGreaterThan(0);
      expect(app.health.current.failing).not.toContain("starting");
      expect(early.health.current.failing).toContain("starting");

      expect(await early.start()).toBe(port);
      expect(await health()).toBe("SERVING");
      expect((await unaryCall(c, echo, { text: "hi" })).response).toMatchObject({ text: "hi" });
    } finally {
      c.close();
      await early.stop("test over");
    }
  });
});

describe("shutdown", () => {
  it("tells watchers NOT_SERVING, ends their streams and stops cleanly", async () => {
    const updates: string[] = [];
    const watchDef = healthDefinition.Watch!;
    const watch = client.makeServerStreamRequest(
      watchDef.path,
      watchDef.requestSerialize,
      watchDef.responseDeserialize as (b: Buffer) => HealthResponse,
      { service: "" },
      new Metadata(),
      {},
    );
    watch.on("data", (m: HealthResponse) => updates.push(m.status));
    const ended = new Promise<number>((resolve) => watch.on("status", (s) => resolve(s.code)));
    watch.on("error", () => {});
    await eventually(() => updates.includes("SERVING"), { what: "first watch update" });

    const result = await app.stop("test");
    expect(result).toEqual({ clean: true, forced: false, failedClosers: [] });
    expect(updates.at(-1)).toBe("NOT_SERVING");
    expect(await ended).toBe(0);
    expect(consumer.stopped).toBe(true);
  });
});
