import { createHmac } from "node:crypto";
import { type GrpcApp, type Logger, SecretBox, startPlatform } from "@spool/kit";
import { AuthServiceService } from "@spool/proto/spool/auth/v1/auth.js";
import { Accounts } from "./app/accounts.js";
import { bootstrap } from "./app/bootstrap.js";
import { KeyManager } from "./app/keys.js";
import { OAuthStates } from "./app/oauth-state.js";
import { ServiceAccounts } from "./app/service-accounts.js";
import { Sessions } from "./app/sessions.js";
import { LoginThrottle } from "./app/throttle.js";
import { AccessTokenIssuer } from "./app/tokens.js";
import type { AuthConfig } from "./config.js";
import { AuthStreams } from "./domain/events.js";
import { configurePasswordPolicy } from "./domain/password-policy.js";
import { authPolicies, authService } from "./grpc/auth-service.js";
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
  configurePasswordPolicy({ minScore: config.PASSWORD_MIN_SCORE });
  // Auth alone creates the AUTH stream (and the JWKS bucket); every other service waits for them.
  const p = await startPlatform({
    name: "auth",
    config,
    streams: [AuthStreams.AUTH.definition()],
    consumes: [],
    audience: AUTH_AUDIENCE,
    signal: options.signal,
  });
  const { store, sql, revocations, logger } = p;
  const keys = new KeyManager({
    store,
    box: new SecretBox(config.masterKeys),
    kv: p.jwks,
    overlapMs: config.SIGNING_KEY_OVERLAP_SECONDS * 1000,
    logger,
  });
  const issuer = new AccessTokenIssuer({
    keys,
    issuer: config.AUTH_ISSUER,
    audiences: config.AUTH_AUDIENCES,
  });
  const sessionsProjector = p.projector(sessionsProjection);
  p.projector(auditProjection);

  const emailKey = createHmac("sha256", config.tokenSecret).update("spool email subjects").digest();
  const accounts = new Accounts(store, emailKey, revocations);
  const throttle = new LoginThrottle(p.redis, config.REDIS_PREFIX, {
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

  await p.retry("ensure a signing key", () => keys.ensureCurrentKey());
  keys.start();
  p.onClose("signing keys", () => keys.stop());
  const { BOOTSTRAP_ORG_NAME: orgName, BOOTSTRAP_ORG_SLUG: orgSlug } = config;
  const admin = { adminEmail: config.BOOTSTRAP_ADMIN_EMAIL, adminPassword: config.BOOTSTRAP_ADMIN_PASSWORD };
  // Converges when run again (a restart does), so a transient failure is retried.
  await p.retry("bootstrap", () => bootstrap(accounts, { orgName, orgSlug, ...admin }, logger));

  const authStream = p.namespace.stream(AuthStreams.AUTH.name);
  const catchUp = async () => {
    const head = (await (await store.manager()).streams.info(authStream)).state.last_seq;
    await sessionsProjector.waitFor(head);
  };
  p.addGuardedService(
    AuthServiceService,
    authService({
      accounts,
      sessions,
      serviceAccounts: new ServiceAccounts(store, issuer, config.SERVICE_TOKEN_TTL_SECONDS, revocations),
      keys,
      oauth: new OAuthStates(store, config.tokenSecret, config.OAUTH_STATE_TTL_SECONDS * 1000),
      audit: new AuditReadModel(sql),
      introspector: p.verifier,
      catchUp,
    }),
    authPolicies,
  );
  const port = await p.serve();
  return { app: p.app, port, logger };
}
