import { hostname } from "node:os";
import {
  connectNats,
  createGrpcServer,
  createLogger,
  createMetricsRegistry,
  createPool,
  DeadLetterStore,
  EventStore,
  type GrpcApp,
  grpcOptionsFromConfig,
  guarded,
  KvJwksSource,
  type Logger,
  Namespace,
  natsCheck,
  openJwksBucket,
  Projector,
  postgresCheck,
  projectorMetrics,
  RevocationSet,
  redisCheck,
  requireAdmin,
  retryTransient,
  startMetricsServer,
  TokenVerifier,
} from "@spool/kit";
import { Redis } from "ioredis";
import { Generations } from "./app/generations.js";
import { isTerminal, OutputLog } from "./app/output-log.js";
import { slotReleaser } from "./app/slot-releaser.js";
import { LeaseSweeper } from "./app/sweeper.js";
import { GenerationWorker } from "./app/worker.js";
import type { GenConfig } from "./config.js";
import { GEN_STREAM, OutputEvent, outputStream, Subjects } from "./domain/events.js";
import { FollowHub } from "./follow/index.js";
import {
  encodeFollowEvent,
  followDefinition,
  generationPolicies,
  generationRules,
  generationService,
  type SharedEvent,
} from "./grpc/generation-service.js";
import { claimHandler, produceHandler } from "./grpc/produce.js";
import { UserLimits } from "./limits/user-limits.js";
import { GenerationsReadModel, generationsProjection } from "./projections/generations.js";
import { BuiltinModel, type ModelProvider, OpenAIProvider } from "./providers/index.js";

export interface RunningGeneration {
  app: GrpcApp;
  port: number;
  logger: Logger;
  worker: GenerationWorker;
  hub: FollowHub<SharedEvent>;
  sweeper: LeaseSweeper;
}

/** Builds and starts generation-stream (the composition root, minus process concerns). */
export async function startGenerationStream(
  config: GenConfig,
  overrides: {
    providers?: ReadonlyMap<string, ModelProvider>;
    /** Aborts waiting for dependencies (a signal during start-up). */
    signal?: AbortSignal;
  } = {},
): Promise<RunningGeneration> {
  const logger = createLogger({ service: "generation-stream", level: config.LOG_LEVEL });
  const namespace = new Namespace(config.STREAM_PREFIX);
  const metrics = createMetricsRegistry({ service: "generation-stream" });
  // Bound first: health answers NOT_SERVING while the dependencies below are waited for.
  const app = createGrpcServer({
    name: "generation-stream",
    logger,
    metrics,
    ...grpcOptionsFromConfig(config),
  });
  await app.listen();
  const waiting = { logger, signal: overrides.signal };
  const nc = await connectNats({
    url: config.NATS_URL,
    name: "spool-generation-stream",
    waitOnFirstConnect: true,
    ...waiting,
  });
  const store = new EventStore(nc, { namespace });
  await retryTransient(
    "create the streams",
    async () => {
      await store.ensureStream(GEN_STREAM);
      await store.ensureStream(outputStream(config.GEN_OUTPUT_RETENTION_SECONDS * 1000));
      await store.ensureStream({ name: "AUTH", subjects: ["auth.>"] });
    },
    waiting,
  );

  const sql = createPool({
    url: config.DATABASE_URL,
    max: config.DATABASE_POOL_MAX,
    applicationName: "spool-generation",
    // Its own schema: no other service sees (or replays) its projections and dead letters.
    schema: config.DATABASE_SCHEMA ?? "generation_stream",
  });
  const redis = new Redis(config.REDIS_URL, {
    maxRetriesPerRequest: 1,
    connectTimeout: 2_000,
    commandTimeout: 2_000,
  });
  redis.on("error", () => {});

  const revocations = new RevocationSet({ store, logger });
  const verifier = new TokenVerifier({
    keys: new KvJwksSource(
      await retryTransient("open the JWKS bucket", () => openJwksBucket(nc, namespace), waiting),
    ),
    issuer: config.AUTH_ISSUER,
    audience: config.AUTH_AUDIENCE,
    revocations,
  });

  const limits = new UserLimits(redis, config.REDIS_PREFIX, {
    maxActive: config.LIMIT_MAX_ACTIVE,
    maxStartsPerWindow: config.LIMIT_STARTS_PER_WINDOW,
    windowMs: config.LIMIT_WINDOW_SECONDS * 1000,
    // Outlives a lease comfortably: a slot is dropped only when its generation is surely settled elsewhere.
    activeTtlMs: config.LEASE_MS * 4,
    activeRetryMs: config.LIMIT_ACTIVE_RETRY_MS,
  });
  const output = new OutputLog(store);
  const providers =
    overrides.providers ??
    new Map<string, ModelProvider>([
      [
        "builtin",
        new BuiltinModel({
          tokensPerSecond: config.BUILTIN_TOKENS_PER_SECOND,
          length: config.BUILTIN_LENGTH,
          maxTokens: config.BUILTIN_MAX_TOKENS,
        }),
      ],
      ...(config.OPENAI_BASE_URL && config.OPENAI_API_KEY && config.openaiModels.size > 0
        ? [...config.openaiModels.keys()].map((name): [string, ModelProvider] => [
            name,
            new OpenAIProvider({
              baseUrl: config.OPENAI_BASE_URL ?? "",
              apiKey: config.OPENAI_API_KEY ?? "",
              models: Object.fromEntries(config.openaiModels),
              connectTimeoutMs: config.OPENAI_CONNECT_TIMEOUT_MS,
              firstTokenTimeoutMs: config.OPENAI_FIRST_TOKEN_TIMEOUT_MS,
              idleTimeoutMs: config.OPENAI_IDLE_TIMEOUT_MS,
            }),
          ])
        : []),
    ]);
  const generations = new Generations({ store, output, limits });
  // Producers stop appending a tenth of a lease before it runs out by their own clock; the sweeper
  // settles a lease only a fifth of a lease after it ran out (grace > margin: see LeaseSweeper).
  const lease = { leaseMs: config.LEASE_MS, safetyMarginMs: Math.floor(config.LEASE_MS / 10) };
  const worker = new GenerationWorker({
    store,
    output,
    limits,
    logger,
    lease,
    providers,
    maxConcurrent: config.WORKER_CONCURRENCY,
    coalesceWindowMs: config.COALESCE_WINDOW_MS,
    coalesceMaxChars: config.COALESCE_MAX_CHARS,
    replica: `${hostname()}-${process.pid}`,
    drainMs: config.WORKER_DRAIN_MS,
  });
  const hub = new FollowHub<SharedEvent>({
    store,
    stream: "GEN_OUTPUT",
    subjectOf: Subjects.output,
    decode: (msg) => {
      const e = OutputEvent.decode(msg.data);
      return {
        sequence: Number(e.sequence),
        terminal: isTerminal(e.event),
        payload: { event: e, wire: encodeFollowEvent(e) },
      };
    },
    logger,
    heartbeatMs: config.HEARTBEAT_MS,
  });
  const deadLetters = new DeadLetterStore(sql);
  await retryTransient("migrate the dead-letter table", () => deadLetters.migrate(), waiting);
  const projector = new Projector(generationsProjection, {
    store,
    sql,
    deadLetters,
    logger,
    metrics: projectorMetrics(metrics),
  });
  const readModel = new GenerationsReadModel(sql);
  const releaser = slotReleaser({ store, limits, deadLetters, logger });
  const sweeper = new LeaseSweeper({
    store,
    output,
    generations: readModel,
    limits,
    logger,
    intervalMs: config.SWEEP_INTERVAL_MS,
    graceMs: Math.floor(config.LEASE_MS / 5),
  });
  const produceDeps = {
    store,
    output,
    lease,
    verifier,
    logger,
    // Only the producer's own organisation: another's generations are never offered.
    queued: async (orgId: string, limit: number) =>
      (
        await sql<{ generation_id: string }[]>`
          SELECT generation_id FROM generations WHERE org_id = ${orgId} AND status = 'queued'
            AND NOT (model = ANY(${[...providers.keys()]})) ORDER BY created_at LIMIT ${limit}`
      ).map((r) => r.generation_id),
  };

  app.onClose("redis", () => redis.quit());
  app.onClose("postgres", () => sql.end({ timeout: 5 }));
  app.onClose("nats", () => nc.drain());
  app.onClose("revocations", () => revocations.stop());
  app.onClose("follow hub", () => hub.close());
  app.onClose("sweeper", () => sweeper.stop());
  app.onClose("worker", () => worker.stop());

  const service = generationService({
    generations,
    readModel,
    follow: hub,
    claim: claimHandler(produceDeps),
  });
  app.addService(
    followDefinition,
    guarded(
      followDefinition,
      { ...service, produceGeneration: produceHandler(produceDeps) },
      {
        verifier,
        policies: generationPolicies,
        rules: generationRules({
          maxMessages: config.MAX_MESSAGES,
          maxMessageChars: config.MAX_MESSAGE_CHARS,
          maxTotalChars: config.MAX_TOTAL_CHARS,
          models: [...providers.keys(), ...config.externalModels],
        }),
      },
    ),
  );
  app.addAdminService({ deadLetters, authorize: requireAdmin(verifier) });
  app.addConsumer(projector);
  app.addConsumer(releaser);
  app.addHealthCheck(natsCheck(nc)).addHealthCheck(redisCheck(redis)).addHealthCheck(postgresCheck(sql));

  await projector.start();
  await releaser.start();
  await revocations.start();
  await revocations.ready;
  await worker.start();
  sweeper.start();
  const metricsServer = await startMetricsServer({
    registry: metrics,
    port: config.METRICS_PORT,
    host: config.METRICS_HOST,
  });
  app.onClose("metrics", () => metricsServer.close());
  const port = await app.start();
  return { app, port, logger, worker, hub, sweeper };
}
