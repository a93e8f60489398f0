import { describe, expect, it } from "vitest";
import { startInfra, urlsFromEnv } from "./infra.js";

describe("test infrastructure", () => {
  it("uses the URLs from the environment without starting anything", async () => {
    const env = {
      SPOOL_TEST_NATS_URL: "nats://n:4222",
      SPOOL_TEST_DATABASE_URL: "postgres://p/postgres",
      SPOOL_TEST_REDIS_URL: "redis://r:6379",
    };
    const infra = await startInfra(env);
    expect(infra.urls).toEqual({
      natsUrl: "nats://n:4222",
      databaseUrl: "postgres://p/postgres",
      redisUrl: "redis://r:6379",
    });
    await infra.stop();
  });

  it("fails loudly, naming what to set, when a URL is missing and no container runtime exists", async () => {
    // This machine kind has no Docker engine; where one exists, containers would start instead.
    const env = { SPOOL_TEST_NATS_URL: "nats://n:4222", DOCKER_HOST: "unix:///nonexistent/docker.sock" };
    expect(urlsFromEnv(env)).toEqual({ natsUrl: "nats://n:4222" });
    const error = await startInfra(env).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(error?.message).toMatch(/no container runtime/);
    expect(error?.message).toContain("SPOOL_TEST_DATABASE_URL");
    expect(error?.message).toContain("SPOOL_TEST_REDIS_URL");
    expect(error?.message).not.toMatch(/^\s+SPOOL_TEST_NATS_URL$/m);
  });
});
