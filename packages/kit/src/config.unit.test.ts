import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { baseConfigShape, ConfigError, isLoopbackHost, loadConfig, secret } from "./config.js";
import { createLogger } from "./logger.js";

const shape = {
  NATS_URL: z.string().url(),
  PORT: z.coerce.number().int().min(1).max(65535).default(50051),
  MASTER_KEY: secret(z.string().min(32)),
};

function capture(): { stream: Writable; lines: () => string } {
  let out = "";
  const stream = new Writable({
    write(chunk, _enc, cb) {
      out += chunk.toString();
      cb();
    },
  });
  return { stream, lines: () => out };
}

describe("loadConfig", () => {
  it("names every missing or bad variable, without echoing values", () => {
    const env = { SPOOL_PORT: "99999999", SPOOL_MASTER_KEY: "short-secret-value" };
    let error: unknown;
    try {
      loadConfig(shape, env);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as ConfigError).message;
    expect(message).toContain("SPOOL_NATS_URL is required but not set");
    expect(message).toContain("SPOOL_PORT:");
    expect(message).toContain("SPOOL_MASTER_KEY:");
    expect(message).not.toContain("short-secret-value");
  });

  it("reads secrets from *_FILE and refuses both or a non-secret file", () => {
    const dir = mkdtempSync(join(tmpdir(), "spool-config-"));
    const file = join(dir, "master-key");
    writeFileSync(file, `${"k".repeat(40)}\n`);
    const config = loadConfig(shape, {
      SPOOL_NATS_URL: "nats://127.0.0.1:4222",
      SPOOL_MASTER_KEY_FILE: file,
    });
    expect(config.MASTER_KEY).toBe("k".repeat(40));
    expect(config.PORT).toBe(50051);
    expect(() =>
      loadConfig(shape, {
        SPOOL_NATS_URL: "nats://x:1",
        SPOOL_MASTER_KEY: "k".repeat(40),
        SPOOL_MASTER_KEY_FILE: file,
      }),
    ).toThrow(/SPOOL_MASTER_KEY and SPOOL_MASTER_KEY_FILE are both set/);
    expect(() => loadConfig(shape, { SPOOL_NATS_URL_FILE: file, SPOOL_MASTER_KEY: "k".repeat(40) })).toThrow(
      /SPOOL_NATS_URL is not a secret/,
    );
    expect(() =>
      loadConfig(shape, { SPOOL_NATS_URL: "nats://x:1", SPOOL_MASTER_KEY_FILE: join(dir, "missing") }),
    ).toThrow(/SPOOL_MASTER_KEY_FILE: cannot read the secret file \(ENOENT\)/);
  });
});

describe("logging", () => {
  it("never writes a configured secret or a credential field, wherever it hides", () => {
    const masterKey = "mk_9f8e7d6c5b4a39281706f5e4d3c2b1a0";
    const config = loadConfig(shape, {
      SPOOL_NATS_URL: "nats://127.0.0.1:4222",
      SPOOL_MASTER_KEY: masterKey,
    });
    const out = capture();
    const logger = createLogger({ service: "test", destination: out.stream, level: "trace" });
    const bearer = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlLXZhbHVl";
    logger.info({ config }, "configuration loaded");
    logger.info(`master key is ${masterKey}`);
    logger.warn({ err: new Error(`failed with ${masterKey}`) }, "boom");
    logger.info(
      { metadata: { authorization: `Bearer ${bearer}` }, user: { password: "hunter2-hunter2" } },
      "call",
    );
    logger.info(
      { refreshToken: "rt_abcdefghijklmnopqrstuvwxyz", clientSecret: "cs_0123456789abcdef" },
      "tokens",
    );
    const lines = out.lines();
    expect(lines.split("\n").filter(Boolean)).toHaveLength(5);
    expect(lines).not.toContain(masterKey);
    expect(lines).not.toContain(bearer);
    expect(lines).not.toContain("hunter2-hunter2");
    expect(lines).not.toContain("rt_abcdefghijklmnopqrstuvwxyz");
    expect(lines).not.toContain("cs_0123456789abcdef");
    // At most the first/last four characters remain, so operators can still correlate.
    expect(lines).toContain("mk_9…b1a0");
  });
});

describe("listen addresses (issue 11 item 7)", () => {
  const hosts = (env: Record<string, string>) => {
    const c = loadConfig(baseConfigShape, { SPOOL_LOG_LEVEL: "silent", ...env });
    return { grpc: c.GRPC_HOST, metrics: c.METRICS_HOST };
  };
  const refusal = (env: Record<string, string>) => {
    try {
      loadConfig(baseConfigShape, { SPOOL_LOG_LEVEL: "silent", ...env });
      return [];
    } catch (e) {
      return (e as ConfigError).problems;
    }
  };

  it("binds loopback by default outside production, every interface in production", () => {
    expect(hosts({})).toEqual({ grpc: "127.0.0.1", metrics: "127.0.0.1" });
    expect(hosts({ SPOOL_ENV: "test" })).toEqual({ grpc: "127.0.0.1", metrics: "127.0.0.1" });
    expect(hosts({ SPOOL_ENV: "production" })).toEqual({ grpc: "0.0.0.0", metrics: "0.0.0.0" });
    expect(hosts({ SPOOL_ENV: "production", SPOOL_GRPC_HOST: "10.1.2.3" }).grpc).toBe("10.1.2.3");
    expect(hosts({ SPOOL_GRPC_HOST: "::1", SPOOL_METRICS_HOST: "localhost" })).toEqual({
      grpc: "::1",
      metrics: "localhost",
    });
  });

  it("refuses a non-loopback address in development and test unless explicitly allowed", () => {
    expect(refusal({ SPOOL_GRPC_HOST: "0.0.0.0" })).toEqual([
      expect.stringMatching(
        /^SPOOL_GRPC_HOST: not a loopback address; development mode listens on loopback only/,
      ),
    ]);
    expect(refusal({ SPOOL_ENV: "test", SPOOL_METRICS_HOST: "::" })).toEqual([
      expect.stringMatching(/^SPOOL_METRICS_HOST: not a loopback address; test mode/),
    ]);
    expect(refusal({ SPOOL_GRPC_HOST: "myhost.example" })).toHaveLength(1);
    expect(hosts({ SPOOL_GRPC_HOST: "0.0.0.0", SPOOL_ALLOW_NON_LOOPBACK: "true" }).grpc).toBe("0.0.0.0");
    expect(refusal({ SPOOL_GRPC_HOST: "0.0.0.0", SPOOL_ALLOW_NON_LOOPBACK: "false" })).toHaveLength(1);
  });

  it("knows loopback addresses", () => {
    for (const h of ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "0:0:0:0:0:0:0:1", "localhost", "LOCALHOST"])
      expect(isLoopbackHost(h), h).toBe(true);
    for (const h of [
      "0.0.0.0",
      "::",
      "10.0.0.1",
      "192.168.1.1",
      "128.0.0.1",
      "example.com",
      "localhost.evil",
    ])
      expect(isLoopbackHost(h), h).toBe(false);
  });
});
