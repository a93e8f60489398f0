// The server side of the auth benchmark: one process serving the same cheap
// unary RPC (AdminService.ListProjections, an empty answer) twice, on two
// ports, through two GrpcApps with the kit's interceptor:
//   - "guarded": behind guarded() with a TokenVerifier (JWKS from NATS KV) and
//     the RevocationSet fed by the AUTH stream, as a service mounts them;
//   - "open": the same implementation without guarded().
// The difference between the two is exactly the authentication a service pays.
//
// Prints one line `spool-bench-echo {"guarded":<port>,"open":<port>}` once
// both listen, and `spool-bench-echo-stats {...}` (the verifier's cache
// counters) on SIGUSR2 and at shutdown.
import {
  connectNats,
  createGrpcServer,
  createLogger,
  EventStore,
  guarded,
  KvJwksSource,
  Namespace,
  openJwksBucket,
  RevocationSet,
  runService,
  TokenVerifier,
} from "@spool/kit";
import { AdminServiceService } from "@spool/proto/spool/admin/v1/admin.js";
import { type EchoStats, READY_PREFIX, STATS_PREFIX } from "./shared.js";

runService("bench-echo", async () => {
  const env = process.env;
  // Per-call logging off by default: the kit logs every call at info, which on
  // this machine would cost more than the authentication being measured.
  const logger = createLogger({ service: "bench-echo", level: env.SPOOL_LOG_LEVEL ?? "warn" });
  const namespace = new Namespace(env.SPOOL_STREAM_PREFIX ?? "");
  const nc = await connectNats({ url: env.SPOOL_NATS_URL ?? "", name: "bench-echo" });
  const store = new EventStore(nc, { namespace });
  await store.ensureStream({ name: "AUTH", subjects: ["auth.>"] });
  const revocations = new RevocationSet({ store, logger });
  await revocations.start();
  await revocations.ready;
  const verifier = new TokenVerifier({
    keys: new KvJwksSource(await openJwksBucket(nc, namespace)),
    issuer: env.SPOOL_AUTH_ISSUER ?? "spool-auth",
    audience: env.SPOOL_BENCH_AUTH_AUDIENCE ?? "spool.generation",
    revocations,
  });

  const implementation = {
    listProjections: async () => ({ projections: [] }),
    getProjection: async () => ({ projection: undefined }),
    rebuildProjection: async () => ({ targetVersion: 0 }),
    listDeadLetters: async () => ({ deadLetters: [], nextPageToken: "" }),
    replayDeadLetter: async () => ({ deadLetter: undefined }),
  };
  const any = { kind: "any" } as const;
  const options = (name: string) => ({
    name,
    logger,
    host: "127.0.0.1",
    port: 0,
    maxReceiveBytes: 1 << 20,
    maxSendBytes: 1 << 20,
    shutdownGraceMs: 2_000,
  });

  const guardedApp = createGrpcServer(options("bench-echo-guarded"));
  guardedApp.addService(
    AdminServiceService,
    guarded(AdminServiceService, implementation, {
      verifier,
      policies: {
        listProjections: any,
        getProjection: any,
        rebuildProjection: any,
        listDeadLetters: any,
        replayDeadLetter: any,
      },
      rules: {
        listProjections: {},
        getProjection: {},
        rebuildProjection: {},
        listDeadLetters: {},
        replayDeadLetter: {},
      },
    }),
  );
  guardedApp.onClose("nats", () => nc.drain());
  guardedApp.onClose("revocations", () => revocations.stop());
  const openApp = createGrpcServer(options("bench-echo-open"));
  openApp.addService(AdminServiceService, implementation);

  let seq = 0;
  const printStats = (n: number) => {
    const stats: EchoStats = { seq: n, ...verifier.cacheStats, revoked: revocations.size };
    process.stdout.write(`${STATS_PREFIX} ${JSON.stringify(stats)}\n`);
  };
  process.on("SIGUSR2", () => printStats(++seq));

  const ports = { guarded: await guardedApp.start(), open: await openApp.start() };
  process.stdout.write(`${READY_PREFIX} ${JSON.stringify(ports)}\n`);
  return {
    logger,
    stop: async (reason?: string) => {
      printStats(0);
      const [a, b] = await Promise.all([openApp.stop(reason), guardedApp.stop(reason)]);
      return { clean: a.clean && b.clean };
    },
  };
});
