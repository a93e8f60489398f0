import { randomBytes } from "node:crypto";
import { type Child, runTs, useInfra } from "@spool/testing";
import { afterAll, describe, expect, it } from "vitest";
import { authEnv, startTestAuth } from "./harness.js";

const infra = useInfra("authmaster");
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const children: Child[] = [];
afterAll(() => {
  for (const c of children) c.kill("SIGKILL");
});

describe("master key at start-up", () => {
  it("a well-formed but wrong master key stops start-up, naming SPOOL_MASTER_KEYS and never the key", async () => {
    const right = randomBytes(32).toString("base64");
    const wrong = randomBytes(32).toString("base64");
    const env = authEnv(infra(), { SPOOL_MASTER_KEYS: `k1:${right}` });
    // The first start creates the signing key, sealed with the right master key.
    const first = await startTestAuth(infra(), {}, env);
    await first.stop();

    const child = runTs(MAIN, { env: { ...env, SPOOL_LOG_LEVEL: "info", SPOOL_MASTER_KEYS: `k1:${wrong}` } });
    children.push(child);
    // Either it stops (the fix) or it starts serving (the defect: every login would answer INTERNAL).
    const outcome = await Promise.race([
      child.exited.then((code) => ({ exited: code })),
      child.waitFor(/grpc server listening/, 60_000).then(() => ({ exited: "still serving" })),
    ]);
    expect(outcome).toEqual({ exited: 78 });
    expect(child.output()).toMatch(/SPOOL_MASTER_KEYS: cannot open the current signing key/);
    expect(child.output()).not.toContain(wrong);
    expect(child.output()).not.toContain(right);

    // The right key still starts.
    const again = await startTestAuth(infra(), {}, env);
    await again.stop();
  });
});
