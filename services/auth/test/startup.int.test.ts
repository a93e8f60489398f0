import { randomBytes } from "node:crypto";
import { runTs, useInfra } from "@spool/testing";
import { describe, expect, it } from "vitest";
import { authEnv } from "./harness.js";

// Start-up refusals of the auth process itself (issue 11 items 6 and 7): each
// bad value stops it with EX_CONFIG and a message naming the variable, before
// it connects to anything. The isolated slice only matters if a refusal
// regressed and the process went on starting.
const infra = useInfra("authstart");
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;

async function refused(overrides: Record<string, string>, message: RegExp): Promise<void> {
  const env = {
    ...authEnv(infra()),
    SPOOL_ENV: "production",
    SPOOL_GRPC_HOST: "127.0.0.1",
    SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "a long production password",
    ...overrides,
  };
  const child = runTs(MAIN, { env });
  const code = await Promise.race([
    child.exited,
    new Promise<string>((resolve) => setTimeout(() => resolve("still running"), 30_000)),
  ]);
  if (code === "still running") child.kill("SIGKILL");
  expect(code, child.output()).toBe(78);
  expect(child.output()).toMatch(message);
  // Secrets are named, never echoed.
  for (const [name, value] of Object.entries(overrides)) {
    if (/KEYS|SECRET|PASSWORD/.test(name)) expect(child.output()).not.toContain(value);
  }
}

const key = () => randomBytes(32).toString("base64");

describe("production start-up refuses weak or malformed secrets", () => {
  it("a master key with '*' inside", async () => {
    const k = key();
    await refused(
      { SPOOL_MASTER_KEYS: `k1:${k.slice(0, 12)}*${k.slice(12)}` },
      /SPOOL_MASTER_KEYS: master key k1: is not canonical base64/,
    );
  });
  it("a master key with bytes after '='", async () => {
    await refused(
      { SPOOL_MASTER_KEYS: `k1:${key()}QUJD` },
      /SPOOL_MASTER_KEYS: master key k1: is not canonical base64/,
    );
  });
  it("a master key of 32 zero bytes", async () => {
    await refused(
      { SPOOL_MASTER_KEYS: `k1:${Buffer.alloc(32).toString("base64")}` },
      /SPOOL_MASTER_KEYS: master key k1: is one byte repeated/,
    );
  });
  it("a token secret of one repeated character", async () => {
    await refused(
      { SPOOL_TOKEN_SECRET: "x".repeat(44) },
      /SPOOL_TOKEN_SECRET: has only \d+ distinct byte values/,
    );
  });
  it("a token secret that is an English phrase", async () => {
    await refused(
      {
        SPOOL_TOKEN_SECRET: Buffer.from("Pack my box with five dozen liquor jugs, please").toString("base64"),
      },
      /SPOOL_TOKEN_SECRET: decodes to printable text/,
    );
  });
  it("a token secret equal to the master key", async () => {
    const k = key();
    await refused(
      { SPOOL_MASTER_KEYS: `k1:${k}`, SPOOL_TOKEN_SECRET: k },
      /SPOOL_TOKEN_SECRET: must not be \(or contain\) a master key/,
    );
  });
  it("a default bootstrap password in another case", async () => {
    await refused(
      { SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "CHANGE-ME-PLEASE" },
      /SPOOL_BOOTSTRAP_ADMIN_PASSWORD: a default password is refused in production/,
    );
  });
  it("a common bootstrap password padded with digits", async () => {
    await refused(
      { SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "1234567890123456" },
      /SPOOL_BOOTSTRAP_ADMIN_PASSWORD: is too easy to guess/,
    );
  });
});

describe("development start-up on a non-loopback address", () => {
  it("refuses SPOOL_GRPC_HOST=0.0.0.0 without SPOOL_ALLOW_NON_LOOPBACK", async () => {
    await refused(
      { SPOOL_ENV: "development", SPOOL_GRPC_HOST: "0.0.0.0" },
      /SPOOL_GRPC_HOST: not a loopback address; development mode listens on loopback only/,
    );
  });
  it("refuses SPOOL_METRICS_HOST=0.0.0.0 without SPOOL_ALLOW_NON_LOOPBACK", async () => {
    await refused(
      { SPOOL_ENV: "test", SPOOL_METRICS_HOST: "0.0.0.0" },
      /SPOOL_METRICS_HOST: not a loopback address; test mode listens on loopback only/,
    );
  });
});
