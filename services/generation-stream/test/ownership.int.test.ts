// Issue 10, "Ownership on every resume": every FollowGeneration (first follow, resume after a
// sequence, snapshot start), GetGeneration and CancelGeneration checks the caller may see the
// generation (its organisation; its owner, or an owner/admin of the organisation; a gen:follow
// service token of the organisation for Get/Follow). Another organisation's id, a colleague's for a
// member, an id guessed from another user's client request id and an unknown id all answer
// NOT_FOUND with the same message, and nothing else.
import { createHash } from "node:crypto";
import { type ServiceError, status } from "@grpc/grpc-js";
import { Role } from "@spool/proto/spool/auth/v1/auth.js";
import { GenerationStatus } from "@spool/proto/spool/generation/v1/generation.js";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openFollow } from "./follow-client.js";
import { authCall, call, type Stack, startRequest, startStack } from "./harness.js";

const infra = useInfra("genowner");
let stack: Stack;
const REQUEST_ID = "my-request-1";
const who = {} as Record<
  "ownerA" | "adminA" | "memberA" | "colleagueA" | "ownerB" | "memberB",
  { token: string; userId: string }
>;
let genOfMemberA: string;
let lastSequence: number;

const a = () => stack.auth.client;
async function login(email: string, password: string) {
  const r = await authCall(a().login, a(), { email, password });
  return { token: r.tokens!.accessToken, userId: r.user!.userId };
}

async function org(operatorToken: string, slug: string) {
  const ownerPassword = "owner password long enough";
  await authCall(
    a().createOrganization,
    a(),
    { name: slug, slug, ownerEmail: `owner@${slug}.test`, ownerDisplayName: "O", ownerPassword },
    operatorToken,
  );
  return login(`owner@${slug}.test`, ownerPassword);
}

async function user(ownerToken: string, email: string, role: Role) {
  const password = "user password long enough";
  await authCall(a().createUser, a(), { email, displayName: "U", password, roles: [role] }, ownerToken);
  return login(email, password);
}

async function start(token: string, clientRequestId: string) {
  const r = await call(
    stack.client.startGeneration,
    stack.client,
    startRequest(clientRequestId, "hello"),
    token,
  );
  return r;
}

/** Generation ids are derived from the owner and the client request id: what a guesser would try. */
const derivedId = (userId: string, requestId: string) =>
  createHash("sha256").update(`${userId}\n${requestId}`).digest("base64url").slice(0, 22);

beforeAll(async () => {
  stack = await startStack(infra(), { SPOOL_LIMIT_MAX_ACTIVE: "10" });
  const operator = await login("admin@spool.test", "correct horse battery staple 42");
  who.ownerA = await org(operator.token, "owner-a");
  who.ownerB = await org(operator.token, "owner-b");
  who.adminA = await user(who.ownerA.token, "admin@owner-a.test", Role.ROLE_ADMIN);
  who.memberA = await user(who.ownerA.token, "member@owner-a.test", Role.ROLE_MEMBER);
  who.colleagueA = await user(who.ownerA.token, "colleague@owner-a.test", Role.ROLE_MEMBER);
  who.memberB = await user(who.ownerB.token, "member@owner-b.test", Role.ROLE_MEMBER);
  genOfMemberA = (await start(who.memberA.token, REQUEST_ID)).generation!.generationId;
  const full = openFollow(stack.client, { generationId: genOfMemberA }, who.memberA.token);
  expect((await full.done).how).toBe("end");
  lastSequence = Number(full.events().at(-1)!.sequence);
});
afterAll(async () => {
  await stack?.stop();
});

/** Every way in to a generation by id; each resolves to "ok" or the status code and message. */
function accesses(generationId: string, token: string) {
  const outcome = (p: Promise<unknown>) =>
    p.then(
      () => ({ code: status.OK, details: "" }),
      (e: ServiceError) => ({ code: e.code, details: e.details }),
    );
  const follow = (request: { afterSequence?: bigint; fromSnapshot?: boolean }) =>
    outcome(
      openFollow(stack.client, { generationId, ...request }, token).done.then((end) => {
        if (end.how === "error") throw end.error;
      }),
    );
  return {
    follow: () => follow({}),
    resume: () => follow({ afterSequence: BigInt(Math.max(1, lastSequence - 2)) }),
    resumeAtEnd: () => follow({ afterSequence: BigInt(lastSequence) }),
    snapshot: () => follow({ fromSnapshot: true }),
    get: () => outcome(call(stack.client.getGeneration, stack.client, { generationId }, token)),
    cancel: () => outcome(call(stack.client.cancelGeneration, stack.client, { generationId }, token)),
  };
}

async function expectAllNotFound(generationId: string, token: string, what: string) {
  const ways = accesses(generationId, token);
  for (const [name, run] of Object.entries(ways)) {
    expect(await run(), `${what}: ${name}`).toEqual({
      code: status.NOT_FOUND,
      details: "generation not found",
    });
  }
}

describe("every follow, resume, get and cancel checks access", () => {
  it("its owner and the organisation's owner and admin reach it by every way", async () => {
    for (const w of [who.memberA, who.ownerA, who.adminA]) {
      const ways = accesses(genOfMemberA, w.token);
      for (const [name, run] of Object.entries(ways)) expect((await run()).code, name).toBe(status.OK);
    }
  });

  it("another organisation's owner and member: NOT_FOUND, as for an unknown id", async () => {
    await expectAllNotFound(genOfMemberA, who.ownerB.token, "owner of B");
    await expectAllNotFound(genOfMemberA, who.memberB.token, "member of B");
    await expectAllNotFound("no-such-generation-id", who.ownerB.token, "unknown id");
    await expectAllNotFound("x".repeat(200), who.memberA.token, "malformed id");
  });

  it("a colleague without an owner or admin role: NOT_FOUND", async () => {
    await expectAllNotFound(genOfMemberA, who.colleagueA.token, "member colleague");
  });

  it("ids guessed from another user's client request id: the same request id is another generation; the derived id is NOT_FOUND", async () => {
    // B's own start with A's client request id is B's own generation, not A's.
    const mine = await start(who.memberB.token, REQUEST_ID);
    expect(mine.created).toBe(true);
    expect(mine.generation?.generationId).not.toBe(genOfMemberA);
    expect(mine.generation?.ownerId).toBe(who.memberB.userId);
    // Knowing A's user id and request id, B computes A's generation id: still NOT_FOUND.
    expect(derivedId(who.memberA.userId, REQUEST_ID)).toBe(genOfMemberA);
    for (const guess of [
      derivedId(who.memberA.userId, REQUEST_ID),
      REQUEST_ID,
      derivedId(who.memberB.userId, "my-request-2"),
    ]) {
      await expectAllNotFound(guess, who.memberB.token, `guess ${guess}`);
    }
    // A colleague in A's organisation guessing the same way: NOT_FOUND too.
    await expectAllNotFound(
      derivedId(who.memberA.userId, REQUEST_ID),
      who.colleagueA.token,
      "colleague's guess",
    );
    // Nothing changed: A's generation is as it was.
    const g = (
      await call(stack.client.getGeneration, stack.client, { generationId: genOfMemberA }, who.memberA.token)
    ).generation!;
    expect(g.status).toBe(GenerationStatus.GENERATION_STATUS_COMPLETED);
  });
});
