// Issue 7 items 4 and 5 for auth: text no store can hold is refused at the
// edge, the audit projection applies every event the log holds (even one
// written before the edge checked), and bad filters are INVALID_ARGUMENT.
import { credentials, type ServiceError, status } from "@grpc/grpc-js";
import { connectNats, EventStore, Namespace, readErrorDetails } from "@spool/kit";
import { AdminServiceClient } from "@spool/proto/spool/admin/v1/admin.js";
import { type AuthServiceClient, Role } from "@spool/proto/spool/auth/v1/auth.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoginFailed, Subjects } from "../src/domain/events.js";
import { call, startTestAuth, type TestAuth } from "./harness.js";

const infra = useInfra("authval");
let auth: TestAuth;
let c: AuthServiceClient;
let admin: AdminServiceClient;
let store: EventStore;
let closeNats: () => Promise<void>;
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };

beforeAll(async () => {
  auth = await startTestAuth(infra());
  c = auth.client;
  admin = new AdminServiceClient(`127.0.0.1:${auth.running.port}`, credentials.createInsecure());
  const nc = await connectNats({ url: infra().natsUrl, name: "auth-validation-test" });
  store = new EventStore(nc, { namespace: new Namespace(infra().streamPrefix) });
  closeNats = () => nc.close();
});
afterAll(async () => {
  admin?.close();
  await closeNats?.();
  await auth?.stop();
});

async function operatorToken(): Promise<string> {
  return (await call(c.login, c, ADMIN)).tokens!.accessToken;
}

async function authHead(): Promise<number> {
  const jsm = await store.manager();
  return (await jsm.streams.info(store.namespace.stream("AUTH"))).state.last_seq;
}

async function refused(p: Promise<unknown>): Promise<{ code: string; fields: string[] }> {
  const err = (await p.then(
    () => {
      throw new Error("the call succeeded but was expected to fail");
    },
    (e: unknown) => e,
  )) as ServiceError;
  return { code: status[err.code], fields: readErrorDetails(err.metadata).violations.map((v) => v.field) };
}

/** The audit projection caught up with the stream, with no dead letters. */
async function auditCaughtUp(token: string) {
  return eventually(
    async () => {
      const p = (await call(admin.getProjection, admin, { name: "auth_audit" }, token)).projection!;
      return p.lag === 0n ? p : undefined;
    },
    { what: "auth_audit caught up", timeoutMs: 10_000 },
  );
}

describe("stored strings", () => {
  it("NUL or control characters in CreateUser and Login emails are INVALID_ARGUMENT and write nothing", async () => {
    const token = await operatorToken();
    await auditCaughtUp(token);
    const before = await authHead();

    for (const email of ["nul\u0000@root.test", "esc\u001b@root.test", "\u202emoc.toor@x"]) {
      const created = call(
        c.createUser,
        c,
        { email, displayName: "X", password: "member password long", roles: [Role.ROLE_MEMBER] },
        token,
      );
      expect(await refused(created)).toEqual({ code: "INVALID_ARGUMENT", fields: ["email"] });
    }
    // Ten anonymous logins with NUL: refused before any work, nothing for the audit to apply.
    for (let i = 0; i < 10; i++) {
      const login = call(c.login, c, { email: `x${i}\u0000@root.test`, password: "whatever password" });
      expect(await refused(login)).toEqual({ code: "INVALID_ARGUMENT", fields: ["email"] });
    }
    expect(await authHead()).toBe(before);

    // A failed login that is accepted is audited, and the projection is not behind.
    await call(c.login, c, { ...ADMIN, password: "not the password, audited" }).catch(() => undefined);
    const p = await auditCaughtUp(token);
    expect(p.deadLetters).toBe(0n);
    expect(p.checkpoint).toBeGreaterThan(BigInt(before));
  });

  it("the audit projection applies an event with NUL already in the log instead of dead-lettering it", async () => {
    const token = await operatorToken();
    // As written before the edge refused NUL.
    const { sequence } = await store.append(Subjects.audit("login"), [
      LoginFailed.create({
        account: "old\u0000@root.test",
        userId: "",
        ip: "10.0.0.1\u0000",
        reason: "bad\u0000",
      }),
    ]);
    const p = await auditCaughtUp(token);
    expect(p.checkpoint).toBeGreaterThanOrEqual(BigInt(sequence));
    expect(p.deadLetters).toBe(0n);
    const dead = await call(
      admin.listDeadLetters,
      admin,
      { consumer: "auth_audit", includeReplayed: true, pageSize: 0, pageToken: "" },
      token,
    );
    expect(dead.deadLetters).toEqual([]);
  });
});

describe("ListAuditEvents filters", () => {
  const base = { type: "", userId: "", sinceMs: 0n, untilMs: 0n, pageSize: 0, pageToken: "" };

  it("answers INVALID_ARGUMENT naming the field for NUL in type or user_id and out-of-range times", async () => {
    const token = await operatorToken();
    const list = (req: Partial<typeof base>) => call(c.listAuditEvents, c, { ...base, ...req }, token);
    const cases: [Partial<typeof base>, string][] = [
      [{ type: "spool.auth.v1.LoginFailed\u0000" }, "type"],
      [{ userId: "\u0000" }, "user_id"],
      [{ sinceMs: 2n ** 63n - 1n }, "since_ms"],
      [{ untilMs: 2n ** 63n - 1n }, "until_ms"],
      [{ sinceMs: -1n }, "since_ms"],
    ];
    for (const [req, field] of cases) {
      expect(await refused(list(req))).toEqual({ code: "INVALID_ARGUMENT", fields: [field] });
    }
    // The last millisecond of year 9999 is still a valid filter.
    expect((await list({ untilMs: 253_402_300_799_999n })).events.length).toBeGreaterThan(0);
  });
});

describe("ListDeadLetters", () => {
  it("answers INVALID_ARGUMENT for NUL in consumer", async () => {
    const token = await operatorToken();
    const req = { consumer: "auth_audit\u0000", includeReplayed: false, pageSize: 0, pageToken: "" };
    expect(await refused(call(admin.listDeadLetters, admin, req, token))).toEqual({
      code: "INVALID_ARGUMENT",
      fields: ["consumer"],
    });
  });
});
