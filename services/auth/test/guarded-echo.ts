// A second service process for the tests: it mounts the kit's authentication
// (JWKS from NATS KV, revocation set from the AUTH stream) in front of a
// service, the way generation-stream or file-ingest will.
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

runService("echo", async () => {
  const env = process.env;
  const logger = createLogger({ service: "echo", level: "info" });
  const namespace = new Namespace(env.SPOOL_STREAM_PREFIX ?? "");
  const nc = await connectNats({ url: env.SPOOL_NATS_URL ?? "", name: "echo" });
  const store = new EventStore(nc, { namespace });
  const revocations = new RevocationSet({ store, logger });
  await revocations.start();
  await revocations.ready;
  const verifier = new TokenVerifier({
    keys: new KvJwksSource(await openJwksBucket(nc, namespace)),
    issuer: env.SPOOL_AUTH_ISSUER ?? "spool-auth",
    audience: "spool.generation",
    revocations,
  });
  const app = createGrpcServer({
    name: "echo",
    logger,
    host: "127.0.0.1",
    port: 0,
    maxReceiveBytes: 1 << 20,
    maxSendBytes: 1 << 20,
    shutdownGraceMs: 2_000,
  });
  const any = { kind: "any" } as const;
  app.addService(
    AdminServiceService,
    guarded(
      AdminServiceService,
      {
        listProjections: async () => ({ projections: [] }),
        getProjection: async () => ({ projection: undefined }),
        rebuildProjection: async () => ({ targetVersion: 0 }),
        listDeadLetters: async () => ({ deadLetters: [], nextPageToken: "" }),
        replayDeadLetter: async () => ({ deadLetter: undefined }),
      },
      {
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
      },
    ),
  );
  app.onClose("nats", () => nc.drain());
  app.onClose("revocations", () => revocations.stop());
  await app.start();
  return { logger, stop: (reason?: string) => app.stop(reason) };
});
