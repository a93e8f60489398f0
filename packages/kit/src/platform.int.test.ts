// The platform itself: a tiny service assembled by startPlatform on the real
// NATS, PostgreSQL and Redis, started before the auth stream it reads exists.
import type { NatsConnection } from "@nats-io/transport-node";
import { eventually, freePort, grpcHealth, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createJwksBucket, jwksBucketName } from "./auth/jwks.js";
import { AuthStreams } from "./auth/streams.js";
import { EventStore } from "./event-store.js";
import { createLogger } from "./logger.js";
import type { ConsumerStatus } from "./managed.js";
import { Namespace } from "./namespace.js";
import { connectNats } from "./nats.js";
import { isStreamNotFound, type Platform, type PlatformConfig, startPlatform } from "./platform.js";
import { defineStreams, family } from "./streams.js";

const infra = useInfra("platform");
const TinyStreams = defineStreams({ TINY: { subjects: { thing: family("tiny.thing") } } });
let nc: NatsConnection;
let store: EventStore;

beforeAll(async () => {
  nc = await connectNats({ url: infra().natsUrl, name: "platform-test" });
  store = new EventStore(nc, { namespace: new Namespace(infra().streamPrefix) });
});
afterAll(async () => {
  await nc?.close();
});

function configOf(port: number): PlatformConfig {
  const s = infra();
  return {
    LOG_LEVEL: "info",
    NATS_URL: s.natsUrl,
    DATABASE_URL: s.databaseUrl,
    DATABASE_SCHEMA: "tiny",
    DATABASE_POOL_MAX: 4,
    REDIS_URL: s.redisUrl,
    STREAM_PREFIX: s.streamPrefix,
    METRICS_HOST: "127.0.0.1",
    METRICS_PORT: 0,
    AUTH_ISSUER: "spool-auth",
    GRPC_HOST: "127.0.0.1",
    GRPC_PORT: port,
    GRPC_MAX_RECEIVE_BYTES: 1 << 20,
    GRPC_MAX_SEND_BYTES: 1 << 20,
    SHUTDOWN_GRACE_MS: 1_000,
  };
}

/** A consumer that records when it starts and stops. */
function recordingConsumer(name: string, log: string[]) {
  return {
    name,
    healthy: () => true,
    replay: async () => {},
    status: async () => ({ name, stream: "TINY", state: "running" }) as ConsumerStatus,
    start: async () => void log.push(`start ${name}`),
    stop: async () => void log.push(`stop ${name}`),
  };
}

describe("startPlatform", () => {
  it("a service reading another's stream waits for it (NOT_SERVING, 'waiting for stream AUTH'), creating nothing; then serves, and shuts down in reverse order", async () => {
    const lines: string[] = [];
    const logger = createLogger({
      service: "tiny",
      destination: { write: (l: string) => void lines.push(l) },
    });
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const starting = startPlatform({
      name: "tiny",
      config: configOf(port),
      streams: [TinyStreams.TINY.definition()],
      consumes: [AuthStreams.AUTH],
      audience: "spool.tiny",
      logger,
    });
    let started: Platform | undefined;
    void starting.then((p) => {
      started = p;
    });
    const logged = (what: RegExp) =>
      eventually(() => lines.some((l) => what.test(l)), { what: String(what), timeoutMs: 20_000 });

    // Listening early, not serving, and saying why.
    await logged(/"failing":\[[^\]]*"waiting for stream AUTH"/);
    expect(await grpcHealth(address)).toBe("NOT_SERVING");
    const jsm = await store.manager();
    // Its own stream is created; the foreign one is not (only auth creates it).
    await jsm.streams.info(store.namespace.stream("TINY"));
    await expect(jsm.streams.info(store.namespace.stream("AUTH"))).rejects.toSatisfy(isStreamNotFound);

    await store.ensureStream(AuthStreams.AUTH.definition());
    // The JWKS bucket is auth's too: opened, never created.
    await logged(/"failing":\[[^\]]*"waiting for JWKS bucket"/);
    expect(started).toBeUndefined();
    await expect(jsm.streams.info(`KV_${jwksBucketName(store.namespace)}`)).rejects.toSatisfy(
      isStreamNotFound,
    );
    await createJwksBucket(nc, store.namespace);

    const p = await starting;
    const events: string[] = [];
    p.addConsumer(recordingConsumer("first", events));
    p.addConsumer(recordingConsumer("second", events));
    p.onClose("outer", () => events.push("close outer"));
    p.onClose("inner", () => events.push("close inner"));
    expect(await p.serve()).toBe(port);
    expect(events).toEqual(["start first", "start second"]);
    await eventually(async () => (await grpcHealth(address)) === "SERVING", { what: "SERVING" });
    // Its subjects come from its one definition, and parse back.
    expect(TinyStreams.TINY.subjects.thing.idOf(TinyStreams.TINY.subjects.thing("t1"))).toBe("t1");

    const result = await p.app.stop("test done");
    expect(result).toMatchObject({ clean: true, failedClosers: [] });
    // Consumers stop first, then the closers in reverse order of registration: the connections last.
    expect(events.slice(2)).toEqual(["stop second", "stop first", "close inner", "close outer"]);
    const closed = lines.flatMap((l) => {
      const m = /"closer":"([^"]+)"/.exec(l);
      return m ? [m[1]] : [];
    });
    expect(closed).toEqual([
      "consumer second",
      "consumer first",
      "metrics",
      "inner",
      "outer",
      "revocations",
      "nats",
      "postgres",
      "redis",
    ]);
    expect(p.nc.isClosed()).toBe(true);
  });
});
