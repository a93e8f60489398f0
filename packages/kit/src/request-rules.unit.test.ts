import { Metadata } from "@grpc/grpc-js";
import { AdminServiceService } from "@spool/proto/spool/admin/v1/admin.js";
import { describe, expect, it } from "vitest";
import { guarded } from "./auth/guard.js";
import type { Principal } from "./auth/principal.js";
import type { TokenVerifier } from "./auth/verifier.js";
import { InvalidArgumentError, SpoolError } from "./errors.js";
import type { CallContext } from "./grpc/context.js";
import { checkRequest, type RequestRules, type Rule, rule, ruleViolations } from "./request-rules.js";

interface Part {
  role: string;
  content: string;
}
interface Request {
  clientRequestId: string;
  messages: Part[];
  parameters?: { topP?: number | undefined; maxTokens?: number | undefined } | undefined;
  afterSequence: bigint;
  createdAfterMs: bigint;
}

const valid: Request = {
  clientRequestId: "r1",
  messages: [{ role: "user", content: "hi" }],
  parameters: { topP: 0.5 },
  afterSequence: 0n,
  createdAfterMs: 0n,
};

const noUserLast: Rule<Request> = (r, _field, v) => {
  if (r.messages.at(-1)?.role !== "user")
    v.check(`messages[${r.messages.length - 1}].role`, "last is the user's");
};

const rules = rule.fields<Request>(
  {
    clientRequestId: rule.all(rule.required(8), rule.matches(/^[a-z0-9]*$/, "a-z, 0-9")),
    messages: rule.each(rule.fields({ role: rule.required(10), content: rule.required(5) })),
    parameters: rule.fields<NonNullable<Request["parameters"]>>({
      topP: rule.optional(rule.check((p) => (p > 0 && p <= 1 ? undefined : "greater than 0, at most 1"))),
      maxTokens: rule.optional(rule.check((n) => (n >= 1 ? undefined : "at least 1"))),
    }),
    afterSequence: rule.sequence,
    createdAfterMs: rule.timestampMs,
  },
  noUserLast,
);

describe("request rules", () => {
  it("name violations by proto field path, in the order the rules are written, whole-message rules last", () => {
    expect(ruleViolations(rules, valid)).toEqual([]);
    const bad: Request = {
      clientRequestId: "",
      messages: [
        { role: "user", content: "hi" },
        { role: "assistant", content: "far too long" },
      ],
      parameters: { topP: 0, maxTokens: undefined },
      afterSequence: 2n ** 60n,
      createdAfterMs: -1n,
    };
    expect(ruleViolations(rules, bad).map((v) => v.field)).toEqual([
      "client_request_id",
      "messages[1].content",
      "parameters.top_p",
      "after_sequence",
      "created_after_ms",
      "messages[1].role",
    ]);
    expect(ruleViolations(rules, { ...valid, clientRequestId: "UPPER" })).toEqual([
      { field: "client_request_id", description: "a-z, 0-9" },
    ]);
    expect(ruleViolations(rules, { ...valid, clientRequestId: "toolong12" })).toEqual([
      { field: "client_request_id", description: "must be at most 8 characters" },
    ]);
  });

  it("skip an absent nested message and unset optional fields", () => {
    expect(ruleViolations(rules, { ...valid, parameters: undefined })).toEqual([]);
    expect(ruleViolations(rules, { ...valid, parameters: {} })).toEqual([]);
  });

  it("throw INVALID_ARGUMENT with every violation; {} accepts anything", () => {
    let thrown: unknown;
    try {
      checkRequest(rules, { ...valid, clientRequestId: "", createdAfterMs: 2n ** 63n - 1n });
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(InvalidArgumentError);
    expect((thrown as InvalidArgumentError).violations.map((v) => v.field)).toEqual([
      "client_request_id",
      "created_after_ms",
    ]);
    expect((thrown as InvalidArgumentError).message).toBe("client_request_id: is required");
    expect(() => checkRequest({}, { anything: "\u0000" })).not.toThrow();
  });

  it("are required for every method at type level, like the policies", () => {
    const none = {
      listProjections: {},
      getProjection: {},
      rebuildProjection: {},
      listDeadLetters: {},
      replayDeadLetter: {},
    };
    const complete: RequestRules<typeof AdminServiceService> = {
      ...none,
      getProjection: { name: rule.required(100) },
    };
    // @ts-expect-error: a method without rules does not compile
    const missing: RequestRules<typeof AdminServiceService> = { listProjections: {} };
    const unknownField: RequestRules<typeof AdminServiceService> = {
      ...none,
      // @ts-expect-error: a rule must name a field of the method's request
      getProjection: { nme: rule.required(1) },
    };
    expect([complete, missing, unknownField]).toHaveLength(3);
  });
});

describe("guarded() with request rules", () => {
  const any = { kind: "any" } as const;
  const p: Principal = {
    kind: "user",
    subject: "u1",
    sessionId: undefined,
    orgId: "o1",
    roles: [],
    scopes: [],
    tokenId: "j1",
    expiresAtMs: Date.now() + 60_000,
    issuedAtMs: Date.now(),
    issuer: "iss",
    audience: ["aud"],
  };
  let calls = 0;
  const svc = guarded(
    AdminServiceService,
    {
      listProjections: async () => ({ projections: [] }),
      getProjection: async () => {
        calls++;
        return { projection: undefined };
      },
      rebuildProjection: async () => ({ targetVersion: 0 }),
      listDeadLetters: async () => ({ deadLetters: [], nextPageToken: "" }),
      replayDeadLetter: async () => ({ deadLetter: undefined }),
    },
    {
      verifier: { verify: async () => p } as unknown as TokenVerifier,
      policies: {
        listProjections: any,
        getProjection: any,
        rebuildProjection: any,
        listDeadLetters: any,
        replayDeadLetter: any,
      },
      rules: {
        listProjections: {},
        getProjection: { name: rule.required(10) },
        rebuildProjection: {},
        listDeadLetters: {},
        replayDeadLetter: {},
      },
    },
  );
  const ctx = (token?: string) => {
    const metadata = new Metadata();
    if (token) metadata.set("authorization", `Bearer ${token}`);
    return { metadata } as unknown as CallContext;
  };
  const codeOf = (call: Promise<unknown>) =>
    call.then(
      () => "OK",
      (e: unknown) => (e instanceof SpoolError ? e.code : e),
    );

  it("checks the request after the caller (an anonymous probe learns nothing) and before the method", async () => {
    expect(await codeOf(svc.getProjection({ name: "" }, ctx()))).toBe("UNAUTHENTICATED");
    expect(await codeOf(svc.getProjection({ name: "" }, ctx("t")))).toBe("INVALID_ARGUMENT");
    expect(calls).toBe(0);
    expect(await codeOf(svc.getProjection({ name: "sessions" }, ctx("t")))).toBe("OK");
    expect(calls).toBe(1);
  });
});
