import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runTs } from "@spool/testing";
import { describe, expect, it } from "vitest";

const main = new URL("../test/config-main.ts", import.meta.url).pathname;

describe("service start-up configuration", () => {
  it("a missing required variable fails start-up naming the variable", async () => {
    const child = runTs(main, { env: { SPOOL_API_KEY: "0123456789abcdef0123" } });
    expect(await child.exited).toBe(78);
    expect(child.output()).toContain("SPOOL_UPSTREAM_URL is required but not set");
    expect(child.output()).not.toContain("ready");
  });

  it("a secret from a file never appears in any log line", async () => {
    const apiKey = "sk-live-7b3f1c9e2d4a6b8c0e1f2a3b4c5d6e7f";
    const dir = mkdtempSync(join(tmpdir(), "spool-secret-"));
    writeFileSync(join(dir, "api-key"), apiKey);
    const child = runTs(main, {
      env: { SPOOL_UPSTREAM_URL: "https://models.example/v1", SPOOL_API_KEY_FILE: join(dir, "api-key") },
    });
    expect(await child.exited).toBe(0);
    const lines = child.output().split("\n").filter(Boolean);
    expect(lines.some((l) => l.includes('"msg":"ready"'))).toBe(true);
    for (const line of lines) expect(line).not.toContain(apiKey);
  });

  it("development mode refuses to listen on 0.0.0.0 without SPOOL_ALLOW_NON_LOOPBACK (issue 11 item 7)", async () => {
    const env = { SPOOL_UPSTREAM_URL: "https://models.example/v1", SPOOL_API_KEY: "0123456789abcdef0123" };
    const refused = runTs(main, { env: { ...env, SPOOL_GRPC_HOST: "0.0.0.0" } });
    expect(await refused.exited).toBe(78);
    expect(refused.output()).toContain(
      "SPOOL_GRPC_HOST: not a loopback address; development mode listens on loopback only",
    );
    expect(refused.output()).not.toContain("ready");

    const allowed = runTs(main, {
      env: { ...env, SPOOL_GRPC_HOST: "0.0.0.0", SPOOL_ALLOW_NON_LOOPBACK: "true" },
    });
    expect(await allowed.exited).toBe(0);
    const warning = allowed
      .output()
      .split("\n")
      .find((l) => l.includes("listening on a non-loopback address outside production"));
    expect(warning).toBeDefined();
    expect(JSON.parse(warning ?? "{}")).toMatchObject({
      level: "warn",
      variable: "SPOOL_GRPC_HOST",
      host: "0.0.0.0",
    });
    expect(allowed.output()).toContain('"msg":"ready"');
  });
});
