import { createHmac } from "node:crypto";
import { SecretBox, type StartedService, startPlatform } from "@spool/kit";
import { AuthServiceService } from "@spool/proto/spool/auth/v1/auth.js";
import { Accounts } from "./app/accounts.js";
import { bootstrap } from "./app/bootstrap.js";
import { KeyManager } from "./app/keys.js";
import { OAuthStates } from "./app/oauth-state.js";
import { ServiceAccounts } from "./app/service-accounts.js";
import { Sessions } from "./app/sessions.js";
import { LoginThrottle } from "./app/throttle.js";
import { AccessTokenIssuer } from "./app/tokens.js";
import { type AuthConfig, bootstrapSettings, sessionPolicy, throttleLimits } from "./config.js";
import { AuthStreams } from "./domain/events.js";
import { configurePasswordPolicy } from "./domain/password-policy.js";
import { authPolicies, authRules, authService } from "./grpc/auth-service.js";
import { AuditReadModel, auditProjection } from "./projections/audit.js";
import { SessionsReadModel, sessionsProjection } from "./projections/sessions.js";

/** The audience of tokens the auth service itself accepts. */
export const AUTH_AUDIENCE = "spool.auth";

export type RunningAuth = StartedService;

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
  const throttle = new LoginThrottle(p.redis, config.REDIS_PREFIX, throttleLimits(config));
  const sessions = new Sessions({
    store,
    accounts,
    tokens: issuer,
    throttle,
    index: new SessionsReadModel(sql),
    tokenSecret: config.tokenSecret,
    withdrawals: revocations,
    policy: sessionPolicy(config),
  });

  await p.retry("ensure a signing key", () => keys.ensureCurrentKey());
  keys.start();
  p.onClose("signing keys", () => keys.stop());
  // Converges when run again (a restart does), so a transient failure is retried.
  await p.retry("bootstrap", () => bootstrap(accounts, bootstrapSettings(config), logger));

  const catchUp = async () => sessionsProjector.waitFor(await p.head(AuthStreams.AUTH.name));
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
    authRules,
  );
  return { app: p.app, port: await p.serve(), logger };
}
