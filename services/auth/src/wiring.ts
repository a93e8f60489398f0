import { createHmac } from "node:crypto";
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
  SecretBox,
  startMetricsServer,
  TokenVerifier,
} from "@spool/kit";
import { AuthServiceService } from "@spool/proto/spool/auth/v1/auth.js";
import { Redis } from "ioredis";
import { Accounts } from "./app/accounts.js";
import { bootstrap } from "./app/bootstrap.js";
import { KeyManager } from "./app/keys.js";
import { OAuthStates } from "./app/oauth-state.js";
import { ServiceAccounts } from "./app/service-accounts.js";
import { Sessions } from "./app/sessions.js";
import { LoginThrottle } from "./app/throttle.js";
import { AccessTokenIssuer } from "./app/tokens.js";
import type { AuthConfig } from "./config.js";
import { AUTH_STREAM } from "./domain/events.js";
import { configurePasswordPolicy } from "./domain/password-policy.js";
import { authPolicies, authRules, authService } from "./grpc/auth-service.js";
import { AuditReadModel, auditProjection } from "./projections/audit.js";
import { SessionsReadModel, sessionsProjection } from "./projections/sessions.js";

/** The audience of tokens the auth service itself accepts. */
export const AUTH_AUDIENCE = "spool.auth";

export interface RunningAuth {
  app: GrpcApp;
  port: number;
  logger: Logger;
}

/** Builds and starts the auth service; returns it running (the composition root, minus process concerns). */
export async function startAuth(
  config: AuthConfig,
  options: { /** Aborts waiting for dependencies (a signal during start-up). */ signal?: AbortSignal } = {},
): Promise<RunningAuth> {
  const logger = createLogger({ service: "auth", level: config.LOG_LEVEL });
  configurePasswordPolicy({ minScore: config.PASSWORD_MIN_SCORE });
  const namespace = new Namespace(config.STREAM_PREFIX);
  const metrics = createMetricsRegistry({ service: "auth" });
  // Bound first: health answers NOT_SERVING while the dependencies below are waited for.
  const app = createGrpcServer({ name: "auth", logger, metrics, ...grpcOptionsFromConfig(config) });
  await app.listen();
  const waiting = { logger, signal: options.signal };
  const nc = await connectNats({
    url: config.NATS_URL,
    name: "spool-auth",
    waitOnFirstConnect: true,
    ...waiting,
  });
  const store = new EventStore(nc, { namespace });
  await retryTransient("create the AUTH stream", () => store.ensureStream(AUTH_STREAM), waiting);

  const sql = createPool({
    url: config.DATABASE_URL,
    max: config.DATABASE_POOL_MAX,
    applicationName: "spool-auth",
    // Its own schema: no other service sees (or replays) its projections and dead letters.
    schema: config.DATABASE_SCHEMA ?? "auth",
  });
  const redis = new Redis(config.REDIS_URL, {
    // Fail fast and closed: a login must not wait on a Redis that is away.
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 2_000,
    commandTimeout: 2_000,
  });
  redis.on("error", () => {}); // state is reported by health; errors surface per command

  const kv = await retryTransient("open the JWKS bucket", () => openJwksBucket(nc, namespace), waiting);
  const keys = new KeyManager({
    store,
    box: new SecretBox(config.masterKeys),
    kv,
    overlapMs: config.SIGNING_KEY_OVERLAP_SECONDS * 1000,
    logger,
  });
  const issuer = new AccessTokenIssuer({
    keys,
    issuer: config.AUTH_ISSUER,
    audiences: config.AUTH_AUDIENCES,
  });
  const revocations = new RevocationSet({ store, logger });
  const verifier = new TokenVerifier({
    keys: new KvJwksSource(kv),
    issuer: config.AUTH_ISSUER,
    audience: AUTH_AUDIENCE,
    revocations,
  });

  const deadLetters = new DeadLetterStore(sql);
  await retryTransient("migrate the dead-letter table", () => deadLetters.migrate(), waiting);
  const tuning = { store, sql, deadLetters, logger, metrics: projectorMetrics(metrics) };
  const sessionsProjector = new Projector(sessionsProjection, tuning);
  const auditProjector = new Projector(auditProjection, tuning);

  const emailKey = createHmac("sha256", config.tokenSecret).update("spool email subjects").digest();
  const accounts = new Accounts(store, emailKey, revocations);
  const throttle = new LoginThrottle(redis, config.REDIS_PREFIX, {
    accountIpFailures: config.THROTTLE_ACCOUNT_IP_FAILURES,
    blockBaseMs: config.THROTTLE_BLOCK_BASE_SECONDS * 1000,
    blockMaxMs: config.THROTTLE_BLOCK_MAX_SECONDS * 1000,
    accountPerHour: config.THROTTLE_ACCOUNT_PER_HOUR,
    ipPerDay: config.THROTTLE_IP_PER_DAY,
  });
  const sessions = new Sessions({
    store,
    accounts,
    tokens: issuer,
    throttle,
    index: new SessionsReadModel(sql),
    tokenSecret: config.tokenSecret,
    withdrawals: revocations,
    policy: {
      accessTokenTtlSeconds: config.ACCESS_TOKEN_TTL_SECONDS,
      refreshIdleMs: config.REFRESH_IDLE_SECONDS * 1000,
      refreshAbsoluteMs: config.REFRESH_ABSOLUTE_SECONDS * 1000,
      refreshGraceMs: config.REFRESH_GRACE_MS,
    },
  });

  // Closers run in reverse: connections close after everything that uses them has stopped.
  app.onClose("redis", () => redis.quit());
  app.onClose("postgres", () => sql.end({ timeout: 5 }));
  app.onClose("nats", () => nc.drain());
  app.onClose("revocations", () => revocations.stop());

  await retryTransient("ensure a signing key", () => keys.ensureCurrentKey(), waiting);
  keys.start();
  app.onClose("signing keys", () => keys.stop());
  // Converges when run again (a restart does), so a transient failure is retried.
  await retryTransient(
    "bootstrap",
    () =>
      bootstrap(
        accounts,
        {
          orgName: config.BOOTSTRAP_ORG_NAME,
          orgSlug: config.BOOTSTRAP_ORG_SLUG,
          adminEmail: config.BOOTSTRAP_ADMIN_EMAIL,
          adminPassword: config.BOOTSTRAP_ADMIN_PASSWORD,
        },
        logger,
      ),
    waiting,
  );

  const jsm = await store.manager();
  const catchUp = async () => {
    const head = (await jsm.streams.info(namespace.stream(AUTH_STREAM.name))).state.last_seq;
    await sessionsProjector.waitFor(head);
  };
  app.addService(
    AuthServiceService,
    guarded(
      AuthServiceService,
      authService({
        accounts,
        sessions,
        serviceAccounts: new ServiceAccounts(store, issuer, config.SERVICE_TOKEN_TTL_SECONDS, revocations),
        keys,
        oauth: new OAuthStates(store, config.tokenSecret, config.OAUTH_STATE_TTL_SECONDS * 1000),
        audit: new AuditReadModel(sql),
        introspector: verifier,
        catchUp,
      }),
      { verifier, policies: authPolicies, rules: authRules },
    ),
  );
  app.addAdminService({ deadLetters, authorize: requireAdmin(verifier) });
  app.addConsumer(sessionsProjector);
  app.addConsumer(auditProjector);
  // Each a round trip with a short timeout: a reconnecting NATS client is not a healthy one.
  app.addHealthCheck(natsCheck(nc)).addHealthCheck(redisCheck(redis)).addHealthCheck(postgresCheck(sql));

  await sessionsProjector.start();
  await auditProjector.start();
  await revocations.start();
  await revocations.ready;

  const metricsServer = await startMetricsServer({
    registry: metrics,
    port: config.METRICS_PORT,
    host: config.METRICS_HOST,
  });
  app.onClose("metrics", () => metricsServer.close());
  const port = await app.start();
  return { app, port, logger };
}
