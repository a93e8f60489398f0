// `spool follow` (packages/cli) checks the transcript against the terminal event's digest and says
// whether it verified: from the start, from a snapshot, and not when resumed after a sequence.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authCall, call, type Stack, startRequest, startStack } from "./harness.js";

const infra = useInfra("gencli");
const SPOOL = fileURLToPath(new URL("../../../bin/spool", import.meta.url));
let stack: Stack;
let token: string;
let generationId: string;

function spool(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      SPOOL,
      [...args, "--gen", `127.0.0.1:${stack.gen.port}`, "--auth", `127.0.0.1:${stack.auth.running.port}`],
      { timeout: 60_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

beforeAll(async () => {
  stack = await startStack(infra());
  const a = stack.auth.client;
  token = (
    await authCall(a.login, a, { email: "admin@spool.test", password: "correct horse battery staple 42" })
  ).tokens!.accessToken;
  const r = await call(stack.client.startGeneration, stack.client, startRequest("cli", "hello"), token);
  generationId = r.generation!.generationId;
});
afterAll(async () => {
  await stack?.stop();
});

describe("spool follow", () => {
  it("prints 'transcript verified' after following from the start, and from a snapshot", async () => {
    for (const extra of [[], ["--snapshot"]]) {
      const r = await spool(["follow", "--access-token", token, "--id", generationId, ...extra]);
      expect(r.stderr).toMatch(/transcript verified/);
      expect(r.code).toBe(0);
      // Followed to its end: stdout is the final text.
      const g = (await call(stack.client.getGeneration, stack.client, { generationId }, token)).generation!;
      expect(r.stdout).toBe(g.text);
    }
  });

  it("says it cannot verify a transcript resumed after a sequence", async () => {
    const r = await spool(["follow", "--access-token", token, "--id", generationId, "--after", "3"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/transcript not verified \(resumed after 3/);
  });
});
