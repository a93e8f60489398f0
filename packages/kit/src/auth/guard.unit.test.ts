import { Metadata } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { PermissionDeniedError } from "../errors.js";
import type { CallContext } from "../grpc/context.js";
import { authorize, isPlatformAdmin, requireAdmin } from "./guard.js";
import type { Principal } from "./principal.js";
import { ADMIN_SCOPE, isKnownScope, isPlatformScope, OPERATOR_SCOPE } from "./scopes.js";
import type { TokenVerifier } from "./verifier.js";

const principal = (p: Partial<Principal>): Principal => ({
  kind: "user",
  subject: "s1",
  sessionId: undefined,
  orgId: "o1",
  roles: [],
  scopes: [],
  tokenId: "j1",
  expiresAtMs: Date.now() + 60_000,
  issuedAtMs: Date.now(),
  issuer: "iss",
  audience: ["aud"],
  ...p,
});

/** requireAdmin over a verifier that accepts the one token "t" as `p`. */
async function admin(p: Principal): Promise<unknown> {
  const verifier = { verify: async () => p } as unknown as TokenVerifier;
  const metadata = new Metadata();
  metadata.set("authorization", "Bearer t");
  return requireAdmin(verifier)({ metadata } as unknown as CallContext).then(
    () => "allowed",
    (e: unknown) => e,
  );
}

describe("platform admin (AdminService on every service)", () => {
  it("is an operator's user token or a service token with spool:admin, nothing else", async () => {
    expect(await admin(principal({ kind: "user", roles: ["owner"], scopes: [OPERATOR_SCOPE] }))).toBe(
      "allowed",
    );
    expect(await admin(principal({ kind: "service", scopes: [ADMIN_SCOPE] }))).toBe("allowed");
    // Each platform scope counts only on its own kind of token, and no organisation role counts.
    for (const p of [
      principal({ kind: "user", roles: ["owner"], scopes: [ADMIN_SCOPE] }),
      principal({ kind: "service", scopes: [OPERATOR_SCOPE] }),
      principal({ kind: "user", roles: ["owner", "admin"] }),
      principal({ kind: "service", scopes: ["gen:produce", "auth:introspect", "gen:follow"] }),
      principal({ kind: "service", scopes: ["spool:admin2", "spool"] }),
    ]) {
      expect(isPlatformAdmin(p)).toBe(false);
      expect(await admin(p)).toBeInstanceOf(PermissionDeniedError);
    }
  });
});

describe("authorize", () => {
  it("counts roles only on user tokens", () => {
    const policy = { roles: ["owner", "admin"], scopes: ["auth:introspect"] };
    expect(() => authorize(principal({ kind: "user", roles: ["admin"] }), policy)).not.toThrow();
    expect(() =>
      authorize(principal({ kind: "service", scopes: ["auth:introspect"] }), policy),
    ).not.toThrow();
    expect(() => authorize(principal({ kind: "service", roles: ["owner"] }), policy)).toThrow(
      PermissionDeniedError,
    );
  });
});

describe("scope catalogue", () => {
  it("knows organisation and platform scopes by exact name", () => {
    expect(isPlatformScope(OPERATOR_SCOPE) && isPlatformScope(ADMIN_SCOPE)).toBe(true);
    expect(["gen:produce", "gen:follow", "auth:introspect"].every(isKnownScope)).toBe(true);
    expect(["gen:produce", "gen:follow", "auth:introspect"].some(isPlatformScope)).toBe(false);
    expect(["gen:produces", "spool:admin ", "SPOOL:ADMIN", "auth"].some(isKnownScope)).toBe(false);
  });
});
