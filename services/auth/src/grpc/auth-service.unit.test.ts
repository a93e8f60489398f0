import { Metadata } from "@grpc/grpc-js";
import { type CallContext, guarded, type Principal, SpoolError, type TokenVerifier } from "@spool/kit";
import { AuthServiceService } from "@spool/proto/spool/auth/v1/auth.js";
import { describe, expect, it } from "vitest";
import type { Accounts } from "../app/accounts.js";
import type { ServiceAccounts } from "../app/service-accounts.js";
import { type AuthServiceDeps, authPolicies, authRules, authService } from "./auth-service.js";

const principal = (p: Partial<Principal>): Principal => ({
  kind: "user",
  subject: "u1",
  sessionId: "s1",
  orgId: "o1",
  roles: ["member"],
  scopes: [],
  tokenId: "j1",
  expiresAtMs: Date.now() + 60_000,
  issuedAtMs: Date.now(),
  issuer: "iss",
  audience: ["aud"],
  ...p,
});

/**
 * WhoAmI through the guard, with a verifier that still accepts the token (its revocation feed has not
 * seen the withdrawal yet) over a log that already has it.
 */
async function whoAmI(p: Principal, log: { user?: unknown; account?: unknown }): Promise<unknown> {
  const deps = {
    accounts: { loadUser: async () => log.user } as unknown as Accounts,
    serviceAccounts: { load: async () => log.account ?? { kind: "none" } } as unknown as ServiceAccounts,
  } as AuthServiceDeps;
  const svc = guarded(AuthServiceService, authService(deps), {
    verifier: { verify: async () => p } as unknown as TokenVerifier,
    policies: authPolicies,
    rules: authRules,
  });
  const metadata = new Metadata();
  metadata.set("authorization", "Bearer t");
  return svc.whoAmI({}, { metadata } as unknown as CallContext).catch((e: unknown) => e);
}

const codeOf = (e: unknown) => (e instanceof SpoolError ? e.code : "an answer");

describe("WhoAmI while the log knows of a withdrawal the verifier has not seen yet", () => {
  const account = { serviceAccountId: "sa1", orgId: "o1", name: "w", scopes: ["gen:follow"] };
  it("is UNAUTHENTICATED, never NOT_FOUND, for a disabled or deleted user or account", async () => {
    // loadUser answers only active users: a disabled or deleted one is undefined.
    expect(codeOf(await whoAmI(principal({}), { user: undefined }))).toBe("UNAUTHENTICATED");
    for (const kind of ["disabled", "deleted", "none"]) {
      const p = principal({ kind: "service", subject: "sa1", sessionId: undefined, roles: [] });
      expect(codeOf(await whoAmI(p, { account: { ...account, kind } }))).toBe("UNAUTHENTICATED");
    }
    const active = await whoAmI(principal({ kind: "service", subject: "sa1", roles: [] }), {
      account: { ...account, kind: "active" },
    });
    expect(active).toMatchObject({ subjectId: "sa1", identity: { $case: "serviceAccount" } });
  });
});
