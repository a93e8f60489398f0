import { hostname } from "node:os";
import { AuthStreams, type GrpcApp, guarded, type Logger, startPlatform } from "@spool/kit";
import { Generations } from "./app/generations.js";
import { isTerminal, OutputLog } from "./app/output-log.js";
import { slotReleaser } from "./app/slot-releaser.js";
import { LeaseSweeper } from "./app/sweeper.js";
import { GenerationWorker } from "./app/worker.js";
import type { GenConfig } from "./config.js";
import { GEN_STREAM, GenStreams, OutputEvent, outputStream, Subjects } from "./domain/events.js";
import { FollowHub } from "./follow/index.js";
import {
  encodeFollowEvent,
  followDefinition,
  generationPolicies,
  generationService,
  type SharedEvent,
} from "./grpc/generation-service.js";
import { claimHandler, produceHandler } from "./grpc/produce.js";
import { UserLimits } from "./limits/user-limits.js";
import { GenerationsReadModel, generationsProjection } from "./projections/generations.js";
import { providersFromConfig } from "./providers/from-config.js";
import type { ModelProvider } from "./providers/index.js";

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
    providers?: ReadonlyMap<string, ModelProvider> /** Aborts start-up waits. */;
    signal?: AbortSignal;
  } = {},
): Promise<RunningGeneration> {
  const p = await startPlatform({
    name: "generation-stream",
    config,
    streams: [GEN_STREAM, outputStream(config.GEN_OUTPUT_RETENTION_SECONDS * 1000)],
    consumes: [AuthStreams.AUTH],
    audience: config.AUTH_AUDIENCE,
    signal: overrides.signal,
  });
  const { store, sql, logger } = p;
  const limits = new UserLimits(p.redis, config.REDIS_PREFIX, {
    maxActive: config.LIMIT_MAX_ACTIVE,
    maxStartsPerWindow: config.LIMIT_STARTS_PER_WINDOW,
    windowMs: config.LIMIT_WINDOW_SECONDS * 1000,
    // Outlives a lease comfortably: a slot is dropped only when its generation is surely settled elsewhere.
    activeTtlMs: config.LEASE_MS * 4,
    activeRetryMs: config.LIMIT_ACTIVE_RETRY_MS,
  });
  const output = new OutputLog(store);
  const providers = overrides.providers ?? providersFromConfig(config);
  const models = [...providers.keys(), ...config.externalModels];
  const {
    MAX_MESSAGES: maxMessages,
    MAX_MESSAGE_CHARS: maxMessageChars,
    MAX_TOTAL_CHARS: maxTotalChars,
  } = config;
  const requestLimits = { maxMessages, maxMessageChars, maxTotalChars, models };
  const generations = new Generations({ store, output, limits, requestLimits });
  // Producers stop appending a tenth of a lease before it runs out by their own clock; the sweeper
  // settles a lease only a fifth of a lease after it ran out (grace > margin: see LeaseSweeper).
  const lease = { leaseMs: config.LEASE_MS, safetyMarginMs: Math.floor(config.LEASE_MS / 10) };
  const worker = new GenerationWorker({
    ...{ store, output, limits, logger, lease, providers },
    maxConcurrent: config.WORKER_CONCURRENCY,
    coalesceWindowMs: config.COALESCE_WINDOW_MS,
    coalesceMaxChars: config.COALESCE_MAX_CHARS,
    replica: `${hostname()}-${process.pid}`,
    drainMs: config.WORKER_DRAIN_MS,
  });
  const hub = new FollowHub<SharedEvent>({
    store,
    stream: GenStreams.GEN_OUTPUT.name,
    subjectOf: Subjects.output,
    decode: (msg) => {
      const e = OutputEvent.decode(msg.data);
      const payload = { event: e, wire: encodeFollowEvent(e) };
      return { sequence: Number(e.sequence), terminal: isTerminal(e.event), payload };
    },
    logger,
    heartbeatMs: config.HEARTBEAT_MS,
  });
  p.projector(generationsProjection);
  p.addConsumer(slotReleaser({ store, limits, deadLetters: p.deadLetters, logger }));
  const readModel = new GenerationsReadModel(sql);
  const sweeper = new LeaseSweeper({
    ...{ store, output, generations: readModel, limits, logger },
    intervalMs: config.SWEEP_INTERVAL_MS,
    graceMs: Math.floor(config.LEASE_MS / 5),
  });
  p.onClose("follow hub", () => hub.close());
  p.onClose("sweeper", () => sweeper.stop());
  p.onClose("worker", () => worker.stop());

  // --- gRPC: GenerationService (unary and server-streaming guarded; ProduceGeneration bidi, self-guarded) ---
  const produceDeps = {
    ...{ store, output, lease, verifier: p.verifier, logger },
    // Only the producer's own organisation: another's generations are never offered.
    queued: async (orgId: string, limit: number) =>
      (
        await sql<{ generation_id: string }[]>`
          SELECT generation_id FROM generations WHERE org_id = ${orgId} AND status = 'queued'
            AND NOT (model = ANY(${[...providers.keys()]})) ORDER BY created_at LIMIT ${limit}`
      ).map((r) => r.generation_id),
  };
  const service = generationService({
    generations,
    readModel,
    follow: hub,
    claim: claimHandler(produceDeps),
  });
  const { produceGeneration: _bidi, ...asyncMethods } = followDefinition;
  const { produceGeneration: _bidiPolicy, ...asyncPolicies } = generationPolicies;
  p.app.addMixedService(
    followDefinition,
    guarded(asyncMethods, service, { verifier: p.verifier, policies: asyncPolicies }),
    { produceGeneration: produceHandler(produceDeps) as never }, // authenticates and authorizes itself
  );
  // --- end gRPC ---

  await p.ready();
  await worker.start();
  sweeper.start();
  const port = await p.serve();
  return { app: p.app, port, logger, worker, hub, sweeper };
}
