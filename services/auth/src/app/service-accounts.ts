import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { type EventStore, PermissionDeniedError, type Principal, UnauthenticatedError } from "@spool/kit";
import { ServiceAccountCreated, Subjects } from "../domain/events.js";
import { scopeProblem, serviceAccountReducer } from "../domain/service-account.js";
import type { AccessTokenIssuer } from "./tokens.js";
import { Violations } from "./validation.js";

const SECRET_PREFIX = "sas_";

function secretHash(secret: string): string {
  return `sha256:${createHash("sha256").update(secret).digest("hex")}`;
}

/** Service accounts: client credentials for other services, scoped, shown once, stored hashed. */
export class ServiceAccounts {
  readonly #store: EventStore;
  readonly #tokens: AccessTokenIssuer;
  readonly #ttlSeconds: number;

  constructor(store: EventStore, tokens: AccessTokenIssuer, ttlSeconds: number) {
    this.#store = store;
    this.#tokens = tokens;
    this.#ttlSeconds = ttlSeconds;
  }

  async create(caller: Principal, name: string, scopes: string[]) {
    const v = new Violations().required("name", name, 200);
    const unique = [...new Set(scopes)];
    if (unique.length === 0) v.check("scopes", "at least one scope is required");
    if (unique.length > 50) v.check("scopes", "at most 50 scopes");
    for (const s of unique) v.check("scopes", scopeProblem(s));
    v.throwIfAny();
    if (unique.includes("auth:operator"))
      throw new PermissionDeniedError("the operator scope cannot be granted");
    const serviceAccountId = randomUUID();
    const clientSecret = `${SECRET_PREFIX}${randomBytes(32).toString("base64url")}`;
    await this.#store.append(
      Subjects.serviceAccount(serviceAccountId),
      [
        ServiceAccountCreated.create({
          serviceAccountId,
          orgId: caller.orgId,
          name: name.trim(),
          scopes: unique,
          secretHash: secretHash(clientSecret),
          createdBy: caller.subject,
        }),
      ],
      { expectedSequence: 0, actor: caller.subject },
    );
    return { serviceAccountId, orgId: caller.orgId, name: name.trim(), scopes: unique, clientSecret };
  }

  /** Client-credentials exchange; every failure is the same UNAUTHENTICATED answer. */
  async exchange(clientId: string, clientSecret: string, requested: string[]) {
    const refuse = () => new UnauthenticatedError("invalid client credentials");
    if (
      !/^[A-Za-z0-9_-]{1,64}$/.test(clientId) ||
      !clientSecret.startsWith(SECRET_PREFIX) ||
      clientSecret.length > 200
    ) {
      throw refuse();
    }
    const { state } = await this.#store.load(Subjects.serviceAccount(clientId), serviceAccountReducer);
    const expected = Buffer.from(state.kind === "active" ? state.secretHash : secretHash("none"));
    const presented = Buffer.from(secretHash(clientSecret));
    if (
      state.kind !== "active" ||
      expected.length !== presented.length ||
      !timingSafeEqual(expected, presented)
    ) {
      throw refuse();
    }
    const scopes = requested.length === 0 ? state.scopes : [...new Set(requested)];
    if (!scopes.every((s) => state.scopes.includes(s)))
      throw new PermissionDeniedError("scope not granted to this client");
    const token = await this.#tokens.issue(
      {
        subject: state.serviceAccountId,
        orgId: state.orgId,
        roles: [],
        scopes,
        clientId: state.serviceAccountId,
      },
      this.#ttlSeconds,
    );
    return { accessToken: token.token, expiresIn: token.expiresIn, scopes };
  }
}
