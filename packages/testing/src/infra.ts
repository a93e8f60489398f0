/**
 * Where the test infrastructure is. URLs come from SPOOL_TEST_NATS_URL,
 * SPOOL_TEST_DATABASE_URL and SPOOL_TEST_REDIS_URL when set; otherwise
 * testcontainers starts NATS (JetStream), PostgreSQL and Redis once per run.
 * When neither is possible the run fails, saying what to set: a missing
 * dependency never turns into skipped tests.
 */
export interface InfraUrls {
  natsUrl: string;
  /** A maintenance database URL; each test file creates its own database from it. */
  databaseUrl: string;
  redisUrl: string;
}

export const ENV_NAMES = {
  natsUrl: "SPOOL_TEST_NATS_URL",
  databaseUrl: "SPOOL_TEST_DATABASE_URL",
  redisUrl: "SPOOL_TEST_REDIS_URL",
} as const;

export function urlsFromEnv(env: NodeJS.ProcessEnv = process.env): Partial<InfraUrls> {
  const out: Partial<InfraUrls> = {};
  for (const [key, name] of Object.entries(ENV_NAMES) as [keyof InfraUrls, string][]) {
    const v = env[name];
    if (v) out[key] = v;
  }
  return out;
}

export interface StartedInfra {
  urls: InfraUrls;
  stop(): Promise<void>;
}

/** Uses the environment's URLs, starting containers only for what is missing. */
export async function startInfra(env: NodeJS.ProcessEnv = process.env): Promise<StartedInfra> {
  const given = urlsFromEnv(env);
  const missing = (Object.keys(ENV_NAMES) as (keyof InfraUrls)[]).filter((k) => !given[k]);
  if (missing.length === 0) return { urls: given as InfraUrls, stop: async () => {} };

  let tc: typeof import("testcontainers");
  try {
    tc = await import("testcontainers");
    await tc.getContainerRuntimeClient();
  } catch (e) {
    throw new Error(
      [
        "test infrastructure unavailable: no container runtime for testcontainers " +
          `(${(e as Error).message.split("\n")[0]}).`,
        "Run NATS (with JetStream), PostgreSQL and Redis and set:",
        ...missing.map((k) => `  ${ENV_NAMES[k]}`),
        "for example SPOOL_TEST_NATS_URL=nats://127.0.0.1:4222 " +
          "SPOOL_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres " +
          "SPOOL_TEST_REDIS_URL=redis://127.0.0.1:6379 (what .ci/run sets up).",
      ].join("\n"),
    );
  }
  const stops: (() => Promise<unknown>)[] = [];
  const urls = { ...given } as InfraUrls;
  if (!urls.natsUrl) {
    const c = await new tc.GenericContainer("nats:2.9.10")
      .withCommand(["-js"])
      .withExposedPorts(4222)
      .start();
    stops.push(() => c.stop());
    urls.natsUrl = `nats://${c.getHost()}:${c.getMappedPort(4222)}`;
  }
  if (!urls.databaseUrl) {
    const c = await new tc.GenericContainer("postgres:15")
      .withEnvironment({ POSTGRES_HOST_AUTH_METHOD: "trust" })
      .withExposedPorts(5432)
      .withWaitStrategy(tc.Wait.forLogMessage(/ready to accept connections/, 2))
      .start();
    stops.push(() => c.stop());
    urls.databaseUrl = `postgres://postgres@${c.getHost()}:${c.getMappedPort(5432)}/postgres`;
  }
  if (!urls.redisUrl) {
    const c = await new tc.GenericContainer("redis:7").withExposedPorts(6379).start();
    stops.push(() => c.stop());
    urls.redisUrl = `redis://${c.getHost()}:${c.getMappedPort(6379)}`;
  }
  return {
    urls,
    stop: async () => {
      await Promise.all(stops.map((s) => s()));
    },
  };
}
