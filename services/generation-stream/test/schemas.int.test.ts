// Issue 7 item 6: services sharing one database each keep their projections,
// checkpoints and dead letters in a schema of their own, so no service lists,
// replays or touches another's.
import { credentials, status } from "@grpc/grpc-js";
import { codeOf } from "@spool/auth/testing";
import { createPool, DeadLetterStore, type Sql } from "@spool/kit";
import { AdminServiceClient } from "@spool/proto/spool/admin/v1/admin.js";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authCall, call, type Stack, startStack } from "./harness.js";

const infra = useInfra("genschema");
let stack: Stack;
let operator: string;
let sql: Sql;
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };

beforeAll(async () => {
  // Both services on the test file's one database, with their default schemas.
  stack = await startStack(infra());
  const a = stack.auth.client;
  operator = (await authCall(a.login, a, ADMIN)).tokens!.accessToken;
  sql = createPool({ url: infra().databaseUrl, max: 2 });
});
afterAll(async () => {
  await sql?.end();
  await stack?.stop();
});

async function tablesIn(schema: string): Promise<string[]> {
  const rows = await sql<{ name: string }[]>`
    SELECT table_name AS name FROM information_schema.tables WHERE table_schema = ${schema} ORDER BY 1`;
  return rows.map((r) => r.name);
}

describe("one schema per service", () => {
  it("keeps each service's projections, checkpoints and dead letters in its own schema, none in public", async () => {
    const auth = await tablesIn("auth");
    const gen = await tablesIn("generation_stream");
    expect(auth).toEqual(
      expect.arrayContaining(["spool_projections", "spool_dead_letters", "auth_audit", "auth_audit_v1"]),
    );
    expect(auth.some((t) => t.startsWith("generations"))).toBe(false);
    expect(gen).toEqual(
      expect.arrayContaining(["spool_projections", "spool_dead_letters", "generations", "generations_v1"]),
    );
    expect(gen.some((t) => t.startsWith("auth_"))).toBe(false);
    expect(await tablesIn("public")).toEqual([]);
  });

  it("generation-stream neither lists nor replays a dead letter of auth's audit projection", async () => {
    const authSql = createPool({ url: infra().databaseUrl, schema: "auth", max: 1 });
    try {
      await new DeadLetterStore(authSql).add({
        consumer: "auth_audit",
        stream: "AUTH",
        message: { subject: "auth.user.someone", seq: 1_000_000, data: new Uint8Array([1, 2, 3]) },
        attempts: 3,
        error: "handler failed",
      });
    } finally {
      await authSql.end();
    }
    const listAll = { consumer: "", includeReplayed: true, pageSize: 0, pageToken: "" };
    const authAdmin = new AdminServiceClient(
      `127.0.0.1:${stack.auth.running.port}`,
      credentials.createInsecure(),
    );
    const genAdmin = new AdminServiceClient(`127.0.0.1:${stack.gen.port}`, credentials.createInsecure());
    try {
      // auth, whose entry it is, sees it.
      const own = await call(authAdmin.listDeadLetters, authAdmin, listAll, operator);
      const entry = own.deadLetters.find((d) => d.consumer === "auth_audit");
      expect(entry).toBeDefined();

      // generation-stream sees nothing of it, filtered or not, and cannot replay it.
      expect((await call(genAdmin.listDeadLetters, genAdmin, listAll, operator)).deadLetters).toEqual([]);
      const filtered = { ...listAll, consumer: "auth_audit" };
      expect((await call(genAdmin.listDeadLetters, genAdmin, filtered, operator)).deadLetters).toEqual([]);
      const replay = call(genAdmin.replayDeadLetter, genAdmin, { id: entry!.id }, operator);
      expect(await codeOf(replay)).toBe(status.NOT_FOUND);

      // Untouched: still pending, its attempts and error as recorded.
      const after = (await call(authAdmin.listDeadLetters, authAdmin, listAll, operator)).deadLetters.find(
        (d) => d.id === entry!.id,
      );
      expect(after).toEqual(entry);
    } finally {
      authAdmin.close();
      genAdmin.close();
    }
  });
});
