import cluster from "node:cluster";
// What every service stands on, assembled in one call: a service's wiring.ts
// then holds only what is its own (see startPlatform).

import type { ServiceDefinition } from "@grpc/grpc-js";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { Redis } from "ioredis";
import { guarded, requireAdmin, type ServicePolicies } from "./auth/guard.js";
import { createJwksBucket, KvJwksSource, openJwksBucket } from "./auth/jwks.js";
import { RevocationSet } from "./auth/revocations.js";
import { AuthStreams } from "./auth/streams.js";
import { TokenVerifier } from "./auth/verifier.js";
import { DeadLetterStore } from "./dead-letters.js";
import { EventStore, type StreamDefinition } from "./event-store.js";
import { createGrpcServer, type GrpcApp, type GrpcConfig, grpcOptionsFromConfig } from "./grpc/app.js";
import type { AsyncService } from "./grpc/handlers.js";
import { natsCheck, postgresCheck, redisCheck } from "./grpc/health.js";
import { createLogger, type Logger } from "./logger.js";
import type { ManagedConsumer } from "./managed.js";
import { createMetricsRegistry, projectorMetrics, type Registry, startMetricsServer } from "./metrics.js";
import { Namespace } from "./namespace.js";
import { connectNats } from "./nats.js";
import { createPool, type Sql } from "./postgres.js";
import type { ProjectionDefinition } from "./projector/definition.js";
import { Projector } from "./projector/projector.js";
import type { RequestRules } from "./request-rules.js";
import { isTransientError, type RetryOptions, retryTransient } from "./transient.js";

/** The configuration the platform reads: the kit's base shape plus the token issuer. */
export interface PlatformConfig extends GrpcConfig {
  LOG_LEVEL: string;
  NATS_URL: string;
  /** Default false: see NatsOptions.noAsyncTraces. */
  NATS_ASYNC_TRACES?: boolean | undefined;
  DATABASE_URL: string;
  DATABASE_SCHEMA?: string | undefined;
  DATABASE_POOL_MAX: number;
  REDIS_URL: string;
  STREAM_PREFIX: string;
  METRICS_HOST: string;
  METRICS_PORT: number;
  AUTH_ISSUER: string;
}

export interface PlatformOptions {
  /** The service's name: logs, metrics, connection names, default schema ("generation-stream" → generation_stream). */
  name: string;
  config: PlatformConfig;
  /** Streams this service owns: created (or brought to their definition) at start. */
  streams: readonly StreamDefinition[];
  /**
   * Other services' streams this one reads: waited for, never created; health
   * says NOT_SERVING "waiting for stream X" meanwhile. Every service verifies
   * tokens against auth's revocations, so AUTH is here unless it is in `streams`.
   */
  consumes: readonly { name: string }[];
  /** `aud` this service's tokens must carry. */
  audience: string;
  /** Aborts waiting for dependencies (a signal during start-up). */
  signal?: AbortSignal | undefined;
  /** Default: a logger for `name` at config.LOG_LEVEL. */
  logger?: Logger;
}

/** What a service's start function returns: runService stops it through app.stop(). */
export interface StartedService {
  app: GrpcApp;
  port: number;
  logger: Logger;
}

/** A consumer the platform starts before serving and stops at shutdown. */
type StartableConsumer = ManagedConsumer & { start(): Promise<void>; stop?: () => Promise<void> };

/** The redis options every service uses: fail fast and closed, never queue commands while Redis is away. */
export const REDIS_OPTIONS = {
  maxRetriesPerRequest: 1,
  enableOfflineQueue: false,
  connectTimeout: 2_000,
  commandTimeout: 2_000,
} as const;

/** Longest pause between two looks for another service's stream. */
const STREAM_WAIT_MAX_DELAY_MS = 2_000;

export interface Platform {
  readonly name: string;
  readonly logger: Logger;
  readonly metrics: Registry;
  readonly namespace: Namespace;
  readonly app: GrpcApp;
  readonly nc: NatsConnection;
  readonly store: EventStore;
  /** PostgreSQL pool on the service's own schema. */
  readonly sql: Sql;
  readonly redis: Redis;
  readonly deadLetters: DeadLetterStore;
  /** The JWKS bucket (auth, its owner, writes it; the others read it). */
  readonly jwks: KV;
  readonly revocations: RevocationSet;
  readonly verifier: TokenVerifier;
  /** The last sequence of a stream (logical name): what a read model must reach to be caught up. */
  head(stream: string): Promise<number>;
  /** Runs an idempotent start-up step, waiting out transient dependency errors (logged). */
  retry<T>(what: string, fn: () => Promise<T>): Promise<T>;
  /** A PostgreSQL projection, registered (admin, health, shutdown) and started by ready(). */
  projector<T extends string>(definition: ProjectionDefinition<T>): Projector<T>;
  /** A reactor or other consumer, registered and started by ready(), in registration order. */
  addConsumer<C extends StartableConsumer>(consumer: C): C;
  /** Serves `definition` with every method behind the token guard and its policy. */
  addGuardedService<D extends ServiceDefinition>(
    definition: D,
    implementation: AsyncService<D>,
    policies: ServicePolicies<D>,
    rules: RequestRules<D>,
  ): void;
  /** Runs at shutdown, in reverse order of registration (see GrpcApp.onClose). */
  onClose(name: string, close: () => unknown): void;
  /** Starts the consumers and waits for the revocation set to catch up; serve() calls it. */
  ready(): Promise<void>;
  /** ready(), the metrics server, then health SERVING: returns the gRPC port. */
  serve(): Promise<number>;
}

/**
 * Opens everything a service needs, in the order that makes shutdown safe
 * (closers run in reverse): the gRPC server first, bound with health
 * NOT_SERVING ("starting") while dependencies are waited for; NATS; the
 * owned streams; PostgreSQL on the service's schema; Redis; the foreign
 * streams (waited for, with their own health reason); JWKS and revocations;
 * dead letters; the admin service. Health checks of NATS, PostgreSQL and
 * Redis are registered. The service then adds its own parts and calls serve().
 */
export async function startPlatform(options: PlatformOptions): Promise<Platform> {
  const { name, config } = options;
  const authStream = AuthStreams.AUTH.name;
  const ownsAuth = options.streams.some((s) => s.name === authStream);
  if (!ownsAuth && !options.consumes.some((s) => s.name === authStream))
    throw new Error(`${name}: tokens are checked against revocations: list ${authStream} in consumes`);

  const logger = options.logger ?? createLogger({ service: name, level: config.LOG_LEVEL });
  const namespace = new Namespace(config.STREAM_PREFIX);
  const metrics = createMetricsRegistry({ service: name });
  const app = createGrpcServer({ name, logger, metrics, ...grpcOptionsFromConfig(config) });
  // A cluster worker binds only when it serves (serve() → start()): the primary deals connections
  // to every worker listening on the port, and one still starting would answer UNIMPLEMENTED for
  // the services it has not registered yet. The workers already serving answer meanwhile.
  if (!cluster.isWorker) await app.listen();
  const waiting: RetryOptions = { logger, signal: options.signal };
  const retry = <T>(what: string, fn: () => Promise<T>) => retryTransient(what, fn, waiting);

  const nc = await connectNats({
    url: config.NATS_URL,
    name: `spool-${name}`,
    waitOnFirstConnect: true,
    noAsyncTraces: config.NATS_ASYNC_TRACES !== true,
    ...waiting,
  });
  const store = new EventStore(nc, { namespace });
  await retry("create the streams", async () => {
    for (const stream of options.streams) await store.ensureStream(stream);
  });

  const sql = createPool({
    url: config.DATABASE_URL,
    max: config.DATABASE_POOL_MAX,
    applicationName: `spool-${name}`,
    // Its own schema: no other service sees (or replays) its projections and dead letters.
    schema: config.DATABASE_SCHEMA ?? name.replaceAll("-", "_"),
  });
  const redis = new Redis(config.REDIS_URL, REDIS_OPTIONS);
  redis.on("error", () => {}); // state is reported by health; errors surface per command
  // Closers run in reverse: connections close after everything that uses them has stopped.
  app.onClose("redis", () => redis.quit());
  app.onClose("postgres", () => sql.end({ timeout: 5 }));
  app.onClose("nats", () => nc.drain());
  // Each a round trip with a short timeout: a reconnecting client is not a healthy one.
  app.addHealthCheck(natsCheck(nc)).addHealthCheck(redisCheck(redis)).addHealthCheck(postgresCheck(sql));
  // Without an offline queue, a command sent before the first connection fails: wait for it here.
  await retry("connect to Redis", () => redis.ping());

  const jsm = await store.manager();
  for (const stream of options.consumes) {
    if (options.streams.some((s) => s.name === stream.name)) continue;
    await awaitForeign(
      app,
      `stream ${stream.name}`,
      () => jsm.streams.info(namespace.stream(stream.name)),
      waiting,
    );
  }
  const jwks = ownsAuth
    ? await retry("create the JWKS bucket", () => createJwksBucket(nc, namespace))
    : await awaitForeign(app, "JWKS bucket", () => openJwksBucket(nc, namespace), waiting);
  const revocations = new RevocationSet({ store, logger });
  app.onClose("revocations", () => revocations.stop());
  const verifier = new TokenVerifier({
    keys: new KvJwksSource(jwks),
    issuer: config.AUTH_ISSUER,
    audience: options.audience,
    revocations,
  });

  const deadLetters = new DeadLetterStore(sql);
  await retry("migrate the dead-letter table", () => deadLetters.migrate());
  app.addAdminService({ deadLetters, authorize: requireAdmin(verifier) });

  const consumers: StartableConsumer[] = [];
  const tuning = { store, sql, deadLetters, logger, metrics: projectorMetrics(metrics) };
  let readied: Promise<void> | undefined;
  const platform: Platform = {
    name,
    logger,
    metrics,
    namespace,
    app,
    nc,
    store,
    sql,
    redis,
    deadLetters,
    jwks,
    revocations,
    verifier,
    retry,
    head: async (stream) => (await jsm.streams.info(namespace.stream(stream))).state.last_seq,
    projector: (definition) => platform.addConsumer(new Projector(definition, tuning)),
    addConsumer: (consumer) => {
      app.addConsumer(consumer);
      consumers.push(consumer);
      return consumer;
    },
    addGuardedService: (definition, implementation, policies, rules) => {
      app.addService(definition, guarded(definition, implementation, { verifier, policies, rules }));
    },
    onClose: (closer, close) => {
      app.onClose(closer, close);
    },
    ready: () => {
      readied ??= (async () => {
        for (const consumer of consumers) await consumer.start();
        // A restarted process must not accept a token revoked while it was down.
        await revocations.start();
        await revocations.ready;
      })();
      return readied;
    },
    serve: async () => {
      await platform.ready();
      const metricsServer = await startMetricsServer({
        registry: metrics,
        port: config.METRICS_PORT,
        host: config.METRICS_HOST,
      });
      app.onClose("metrics", () => metricsServer.close());
      return app.start();
    },
  };
  return platform;
}

/** True for JetStream's "stream not found": another service has not created its stream (or bucket) yet. */
export function isStreamNotFound(e: unknown): boolean {
  return e instanceof JetStreamApiError && e.code === JetStreamApiCodes.StreamNotFound;
}

/**
 * Waits until `open` finds what another service creates, holding health
 * NOT_SERVING with "waiting for <what>" meanwhile: the order in which
 * services start does not matter, and an operator sees what is missing.
 */
async function awaitForeign<T>(
  app: GrpcApp,
  what: string,
  open: () => Promise<T>,
  waiting: RetryOptions,
): Promise<T> {
  try {
    return await open();
  } catch (e) {
    if (!isStreamNotFound(e) && !isTransientError(e)) throw e;
  }
  const reason = `waiting for ${what}`;
  app.health.hold(reason);
  try {
    return await retryTransient(reason, open, {
      ...waiting,
      maxDelayMs: STREAM_WAIT_MAX_DELAY_MS,
      isTransient: (e) => isStreamNotFound(e) || isTransientError(e),
    });
  } finally {
    app.health.release(reason);
  }
}
