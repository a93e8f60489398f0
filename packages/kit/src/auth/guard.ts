import type { Metadata } from "@grpc/grpc-js";
import { PermissionDeniedError, UnauthenticatedError } from "../errors.js";
import type { CallContext } from "../grpc/context.js";
import type { AsyncService } from "../grpc/handlers.js";
import { checkRequest, type MessageRules, type RequestRules } from "../request-rules.js";
import { hasRole, hasScope, type Principal } from "./principal.js";
import { ADMIN_SCOPE, OPERATOR_SCOPE } from "./scopes.js";
import type { TokenVerifier } from "./verifier.js";

/**
 * Who may call a method. `public` methods take no token. Otherwise a verified
 * access token is required, of the given kind, holding one of `roles` (exact
 * match) or one of `scopes`; with neither listed, any verified caller passes.
 * Roles are organisation roles of a user: they count only on user tokens.
 */
export type MethodPolicy =
  | { public: true }
  | {
      public?: false;
      kind?: "user" | "service" | "any";
      roles?: readonly string[];
      scopes?: readonly string[];
    };

/** A policy for every method of a service definition: adding a method without one does not compile. */
export type ServicePolicies<D> = { readonly [K in keyof D]: MethodPolicy };

const principals = new WeakMap<CallContext, Principal>();

/** The verified caller of a guarded, non-public method. */
export function principalOf(ctx: CallContext): Principal {
  const p = principals.get(ctx);
  if (!p) throw new UnauthenticatedError();
  return p;
}

/** The verified caller when the method is public and a token was sent anyway. */
export function optionalPrincipalOf(ctx: CallContext): Principal | undefined {
  return principals.get(ctx);
}

export function bearerToken(metadata: Metadata): string | undefined {
  const value = metadata.get("authorization")[0];
  if (typeof value !== "string") return undefined;
  const match = /^Bearer ([^\s]+)$/i.exec(value.trim());
  return match?.[1];
}

export function authorize(principal: Principal, policy: Exclude<MethodPolicy, { public: true }>): void {
  const kind = policy.kind ?? "any";
  if (kind !== "any" && principal.kind !== kind) throw new PermissionDeniedError();
  const roles = policy.roles ?? [];
  const scopes = policy.scopes ?? [];
  if (roles.length === 0 && scopes.length === 0) return;
  // The auth service never puts roles in a service token; refusing them here keeps it so.
  if ((principal.kind === "user" && hasRole(principal, ...roles)) || hasScope(principal, ...scopes)) return;
  throw new PermissionDeniedError();
}

/**
 * Wraps a service so every method verifies the caller's access token and
 * checks the method's policy, then the request against the method's rules
 * (request-rules.ts), before the implementation runs. Identity comes only
 * from the token (principalOf(ctx)), never from request fields.
 * Streaming methods of every kind are authorized once, when the call opens:
 * a refused client- or bidi-streaming call ends before any of its messages
 * is read; their rules apply to each message as the handler reads it.
 */
export function guarded<D extends Record<string, unknown>>(
  definition: D,
  implementation: AsyncService<D>,
  options: { verifier: TokenVerifier; policies: ServicePolicies<D>; rules: RequestRules<D> },
): AsyncService<D> {
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(definition)) {
    const policy = options.policies[name as keyof D];
    if (!policy) throw new Error(`method ${name} has no authorization policy`);
    const rules = options.rules[name as keyof D] as MessageRules<unknown> | undefined;
    if (!rules) throw new Error(`method ${name} has no request rules`);
    // The first argument is the request, or the request stream of a client/bidi method.
    const streamed = (definition[name] as { requestStream?: boolean } | undefined)?.requestStream === true;
    const fn = (implementation as Record<string, (req: unknown, ctx: CallContext) => Promise<unknown>>)[name];
    if (typeof fn !== "function") throw new Error(`method ${name} has no implementation`);
    out[name] = async (request: unknown, ctx: CallContext) => {
      const token = bearerToken(ctx.metadata);
      if (policy.public) {
        if (token) {
          const p = await options.verifier.verify(token).catch(() => undefined);
          if (p) principals.set(ctx, p);
        }
      } else {
        if (!token) throw new UnauthenticatedError("an access token is required");
        const principal = await options.verifier.verify(token);
        authorize(principal, policy);
        principals.set(ctx, principal);
      }
      if (streamed)
        return fn.call(implementation, checkedStream(rules, request as AsyncIterable<unknown>), ctx);
      checkRequest(rules, request);
      return fn.call(implementation, request, ctx);
    };
  }
  return out as AsyncService<D>;
}

/** A request stream whose every message is checked against the method's rules as it is read. */
async function* checkedStream(rules: MessageRules<unknown>, requests: AsyncIterable<unknown>) {
  for await (const message of requests) {
    checkRequest(rules, message);
    yield message;
  }
}

/**
 * A platform-wide administrator, trusted by every service's AdminService
 * (projections and dead letters of every organisation). Only principals whose
 * privilege no organisation can mint:
 * - a platform operator: a user token with auth:operator (auth puts it only in
 *   tokens of users created with the operator flag, i.e. the bootstrap admin);
 * - a platform admin service token with spool:admin (auth grants it only to
 *   service accounts an operator created, and drops it at exchange otherwise).
 * The kind is checked too, so neither scope counts on the other kind of token.
 */
export function isPlatformAdmin(principal: Principal): boolean {
  return (
    (principal.kind === "user" && hasScope(principal, OPERATOR_SCOPE)) ||
    (principal.kind === "service" && hasScope(principal, ADMIN_SCOPE))
  );
}

/** Authorizer for the admin service every service mounts: platform admins only (isPlatformAdmin). */
export function requireAdmin(verifier: TokenVerifier): (ctx: CallContext) => Promise<void> {
  return async (ctx) => {
    const token = bearerToken(ctx.metadata);
    if (!token) throw new UnauthenticatedError("an access token is required");
    const principal = await verifier.verify(token);
    if (!isPlatformAdmin(principal)) throw new PermissionDeniedError();
  };
}
