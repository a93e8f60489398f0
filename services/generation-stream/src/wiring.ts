import { hostname } from "node:os";
import { AuthStreams, FilesStreams, type Platform, type StartedService, startPlatform } from "@spool/kit";
import { FILES_STREAM, type FileCheckDeps } from "./app/file-check.js";
import { Generations } from "./app/generations.js";
import { OutputLog } from "./app/output-log.js";
import { slotReleaser } from "./app/slot-releaser.js";
import { LeaseSweeper } from "./app/sweeper.js";
import { GenerationWorker } from "./app/worker.js";
import { type GenConfig, leaseTiming, requestLimits, userLimits, workerTuning } from "./config.js";
import { GEN_STREAM, outputStream, Subjects } from "./domain/events.js";
import { FollowHub } from "./follow/index.js";
import {
  followDefinition,
  generationPolicies,
  generationRules,
  generationService,
  outputFeed,
  type SharedEvent,
} from "./grpc/generation-service.js";
import { claimHandler, produceHandler } from "./grpc/produce.js";
import { UserLimits } from "./limits/user-limits.js";
import { FilesReadModel, filesProjection } from "./projections/files.js";
import { GenerationsReadModel, generationsProjection } from "./projections/generations.js";
import { providersFromConfig } from "./providers/from-config.js";
import type { ModelProvider } from "./providers/index.js";

export interface RunningGeneration extends StartedService {
  worker: GenerationWorker;
  hub: FollowHub<SharedEvent>;
  sweeper: LeaseSweeper;
}

/** Builds and starts generation-stream (the composition root, minus process concerns). */
export async function startGenerationStream(
  config: GenConfig,
  /** providers: instead of the configured ones (tests); signal: aborts start-up waits. */
  overrides: { providers?: ReadonlyMap<string, ModelProvider>; signal?: AbortSignal } = {},
): Promise<RunningGeneration> {
  const p = await startPlatform({
    name: "generation-stream",
    config,
    streams: [GEN_STREAM, outputStream(config.GEN_OUTPUT_RETENTION_SECONDS * 1000)],
    // FILES only with file attachments on: a deployment without file-ingest does not wait for it.
    consumes: [AuthStreams.AUTH, ...(config.FILES_ENABLED ? [FilesStreams.FILES] : [])],
    audience: config.AUTH_AUDIENCE,
    signal: overrides.signal,
  });
  const { store, logger } = p;
  const limits = new UserLimits(p.redis, config.REDIS_PREFIX, userLimits(config));
  const output = new OutputLog(store);
  const parts = { store, output, limits, logger };
  const providers = overrides.providers ?? providersFromConfig(config);
  const builtIn = [...providers.keys()];
  const requests = { ...requestLimits(config), models: [...builtIn, ...config.externalModels] };
  const generations = new Generations({
    ...parts,
    ...(config.FILES_ENABLED ? { files: fileChecks(p, config) } : {}),
  });
  const { lease, sweep } = leaseTiming(config);
  const replica = `${hostname()}-${process.pid}`;
  const worker = new GenerationWorker({ ...parts, lease, providers, replica, ...workerTuning(config) });
  const hub = new FollowHub<SharedEvent>({
    ...outputFeed(),
    store,
    logger,
    heartbeatMs: config.HEARTBEAT_MS,
    catchUpBytes: config.FOLLOW_CATCHUP_BYTES,
    maxCatchUpReads: config.FOLLOW_MAX_CATCHUP_READS,
    feedSubject: config.FOLLOW_FEED === "stream" ? Subjects.output.all : undefined,
  });
  p.projector(generationsProjection);
  p.addConsumer(slotReleaser({ store, limits, deadLetters: p.deadLetters, logger }));
  const readModel = new GenerationsReadModel(p.sql);
  const sweeper = new LeaseSweeper({ ...parts, generations: readModel, ...sweep });
  p.onClose("follow hub", () => hub.close());
  p.onClose("sweeper", () => sweeper.stop());
  p.onClose("worker", () => worker.stop());

  // --- gRPC: GenerationService (every method guarded; ProduceGeneration is bidi) ---
  const produceDeps = {
    ...{ store, output, lease, logger },
    // Only the producer's own organisation: another's generations are never offered.
    queued: (orgId: string, limit: number) => readModel.queuedExternal(orgId, builtIn, limit),
  };
  const service = generationService({
    generations,
    readModel,
    follow: hub,
    output,
    revocations: p.revocations,
    retentionSeconds: config.GEN_OUTPUT_RETENTION_SECONDS,
    claim: claimHandler(produceDeps),
  });
  p.addGuardedService(
    followDefinition,
    { ...service, produceGeneration: produceHandler(produceDeps) },
    generationPolicies,
    generationRules(requests),
  );
  // --- end gRPC ---

  await p.ready(); // the projection's tables exist before the sweeper reads them
  await worker.start();
  sweeper.start();
  return { app: p.app, port: await p.serve(), logger, worker, hub, sweeper };
}

/** File checks for StartGeneration: the FILES projection, and the way to let it catch up. */
function fileChecks(p: Platform, config: GenConfig): FileCheckDeps {
  const projector = p.projector(filesProjection);
  const files = new FilesReadModel(p.sql);
  return {
    read: (orgId, ids) => files.inOrganisation(orgId, ids),
    head: () => p.head(FILES_STREAM),
    waitFor: (sequence, timeoutMs) => projector.waitFor(sequence, timeoutMs),
    catchUpMs: config.FILES_CATCH_UP_MS,
  };
}
