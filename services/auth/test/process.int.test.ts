import { credentials, Metadata, status } from "@grpc/grpc-js";
import { AdminServiceClient } from "@spool/proto/spool/admin/v1/admin.js";
import { AuthServiceClient } from "@spool/proto/spool/auth/v1/auth.js";
import { type Child, eventually, runTs, useInfra } from "@spool/testing";
import { afterAll, describe, expect, it } from "vitest";
import { authEnv, call, codeOf } from "./harness.js";

const infra = useInfra("authe2e");
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const ECHO = new URL("./guarded-echo.ts", import.meta.url).pathname;
const children: Child[] = [];
afterAll(() => {
  for (const c of children) c.kill("SIGKILL");
});

async function portOf(child: Child): Promise<number> {
  const line = await child.waitFor(/"port":\d+[^\n]*grpc server listening/, 60_000);
  return Number(/"port":(\d+)/.exec(line)?.[1]);
}

describe("auth as a process, with a second service mounting the kit", () => {
  it("login, call, refresh, logout through the generated client; logout reaches the other process", async () => {
    const env: Record<string, string> = { ...authEnv(infra()), SPOOL_LOG_LEVEL: "info" };
    const auth = runTs(MAIN, { env });
    children.push(auth);
    const authPort = await portOf(auth);
    const echo = runTs(ECHO, { env });
    children.push(echo);
    const echoPort = await portOf(echo);

    const client = new AuthServiceClient(`127.0.0.1:${authPort}`, credentials.createInsecure());
    const other = new AdminServiceClient(`127.0.0.1:${echoPort}`, credentials.createInsecure());
    const callOther = (token: string) =>
      new Promise<unknown>((resolve, reject) => {
        const m = new Metadata();
        m.set("authorization", `Bearer ${token}`);
        other.listProjections({}, m, (err, res) => (err ? reject(err) : resolve(res)));
      });

    const login = await call(client.login, client, {
      email: env.SPOOL_BOOTSTRAP_ADMIN_EMAIL!,
      password: env.SPOOL_BOOTSTRAP_ADMIN_PASSWORD!,
    });
    const access = login.tokens!.accessToken;
    expect(await codeOf(callOther(access))).toBeUndefined();
    expect(await codeOf(callOther("garbage"))).toBe(status.UNAUTHENTICATED);

    const refreshed = await call(client.refreshToken, client, { refreshToken: login.tokens!.refreshToken });
    expect(await codeOf(callOther(refreshed.tokens!.accessToken))).toBeUndefined();

    await call(client.logout, client, {}, refreshed.tokens!.accessToken);
    // Both access tokens of the session, though unexpired, stop working in the other process.
    await eventually(async () => (await codeOf(callOther(access))) === status.UNAUTHENTICATED, {
      what: "revocation reaching the other process",
      timeoutMs: 5_000,
    });
    expect(await codeOf(callOther(refreshed.tokens!.accessToken))).toBe(status.UNAUTHENTICATED);

    client.close();
    other.close();
    auth.kill("SIGTERM");
    echo.kill("SIGTERM");
    expect(await auth.exited).toBe(0);
    expect(await echo.exited).toBe(0);
    // No token or password reached the logs.
    for (const out of [auth.output(), echo.output()]) {
      expect(out).not.toContain(env.SPOOL_BOOTSTRAP_ADMIN_PASSWORD!);
      expect(out).not.toContain(access);
      expect(out).not.toContain(login.tokens!.refreshToken);
    }
  });
});

describe("production mode refuses unsafe configuration", () => {
  const refuse = async (overrides: Record<string, string | undefined>, message: RegExp) => {
    const env: Record<string, string> = {
      ...authEnv(infra()),
      SPOOL_ENV: "production",
      SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "a long production password",
    };
    for (const [k, v] of Object.entries(overrides)) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    // Unset variables must not leak in from the parent either.
    const child = runTs(MAIN, {
      env: {
        ...env,
        ...Object.fromEntries(
          Object.entries(overrides)
            .filter(([, v]) => v === undefined)
            .map(([k]) => [k, ""]),
        ),
      },
    });
    expect(await child.exited).toBe(78);
    expect(child.output()).toMatch(message);
  };

  it("a missing master key", async () => {
    await refuse({ SPOOL_MASTER_KEYS: undefined }, /SPOOL_MASTER_KEYS is required/);
  });
  it("a short master key", async () => {
    await refuse(
      { SPOOL_MASTER_KEYS: `k1:${Buffer.alloc(16).toString("base64")}` },
      /SPOOL_MASTER_KEYS: master key k1: must be 32 bytes/,
    );
  });
  it("a default bootstrap password", async () => {
    await refuse(
      { SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "change-me-please" },
      /SPOOL_BOOTSTRAP_ADMIN_PASSWORD: a default password is refused/,
    );
  });
  it("a short token secret", async () => {
    await refuse(
      { SPOOL_TOKEN_SECRET: Buffer.alloc(8).toString("base64") },
      /SPOOL_TOKEN_SECRET: must be at least 32 bytes/,
    );
  });
});
