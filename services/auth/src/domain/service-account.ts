import { type EventOf, type NewEvent, type Reducer, unreachable } from "@spool/kit";
import {
  AuthEvents,
  ServiceAccountDeleted,
  ServiceAccountDisabled,
  ServiceAccountEnabled,
  ServiceAccountSecretRotated,
  Subjects,
} from "./events.js";

export interface ServiceAccountData {
  serviceAccountId: string;
  orgId: string;
  name: string;
  scopes: string[];
  secretHash: string;
  /** The secret the last rotation replaced, while it still exchanges. */
  previousSecret: { hash: string; validUntilMs: number } | undefined;
  /** When the account was last disabled or deleted (ms), 0 if never: its tokens up to then are refused. */
  notBeforeMs: number;
  /** Who created it: platform scopes count only for accounts an operator created. */
  createdBy: string;
}

/** Active, disabled (no exchange until enabled) or deleted (final). */
export type ServiceAccount =
  | { kind: "none" }
  | (ServiceAccountData & { kind: "active" | "disabled" | "deleted" });

/** The most a rotation lets the previous secret keep exchanging: 7 days. */
export const MAX_SECRET_OVERLAP_SECONDS = 7 * 86_400;

/** The events of a service account's subject. */
export const ServiceAccountEvents = AuthEvents.pick(
  "ServiceAccountCreated",
  "ServiceAccountDisabled",
  "ServiceAccountEnabled",
  "ServiceAccountDeleted",
  "ServiceAccountSecretRotated",
);

export const serviceAccountReducer: Reducer<ServiceAccount, EventOf<typeof ServiceAccountEvents>> = {
  initial: () => ({ kind: "none" }),
  decode: ServiceAccountEvents.decode,
  evolve: (state, event) => {
    if (event.type === "ServiceAccountCreated") {
      const e = event.data;
      return {
        kind: "active",
        serviceAccountId: e.serviceAccountId,
        orgId: e.orgId,
        name: e.name,
        scopes: e.scopes,
        secretHash: e.secretHash,
        previousSecret: undefined,
        notBeforeMs: 0,
        createdBy: e.createdBy,
      };
    }
    if (state.kind === "none" || state.kind === "deleted") return state;
    const at = event.meta.time.getTime();
    switch (event.type) {
      case "ServiceAccountDisabled":
        return { ...state, kind: "disabled", notBeforeMs: at };
      case "ServiceAccountEnabled":
        return { ...state, kind: "active" };
      case "ServiceAccountDeleted":
        return { ...state, kind: "deleted", notBeforeMs: at };
      case "ServiceAccountSecretRotated": {
        const e = event.data;
        const until = Number(e.previousValidUntilMs);
        return {
          ...state,
          secretHash: e.secretHash,
          previousSecret: until > 0 ? { hash: state.secretHash, validUntilMs: until } : undefined,
        };
      }
      case "unknown":
        return state;
      default:
        return unreachable(event);
    }
  },
};

export const ServiceAccountAggregate = { subject: Subjects.serviceAccount, reducer: serviceAccountReducer };

/** Scopes: 1-64 of a-z, 0-9 and ':', '.', '_', '-' (e.g. "gen:produce"). */
export function scopeProblem(scope: string): string | undefined {
  return /^[a-z0-9][a-z0-9:._-]{0,63}$/.test(scope)
    ? undefined
    : "must be 1-64 of a-z, 0-9, ':', '.', '_', '-'";
}

export function serviceAccountIdProblem(id: string): string | undefined {
  return /^[A-Za-z0-9_-]{1,64}$/.test(id) ? undefined : "must be a service account id";
}

export function overlapProblem(seconds: number): string | undefined {
  return Number.isInteger(seconds) && seconds >= 0 && seconds <= MAX_SECRET_OVERLAP_SECONDS
    ? undefined
    : `must be 0-${MAX_SECRET_OVERLAP_SECONDS} seconds`;
}

const live = (s: ServiceAccount): s is ServiceAccountData & { kind: "active" | "disabled" } =>
  s.kind === "active" || s.kind === "disabled";

export function decideDisable(state: ServiceAccount, by: string): NewEvent[] {
  if (state.kind !== "active") return [];
  return [
    ServiceAccountDisabled.create({
      serviceAccountId: state.serviceAccountId,
      orgId: state.orgId,
      disabledBy: by,
    }),
  ];
}

export function decideEnable(state: ServiceAccount, by: string): NewEvent[] {
  if (state.kind !== "disabled") return [];
  return [
    ServiceAccountEnabled.create({
      serviceAccountId: state.serviceAccountId,
      orgId: state.orgId,
      enabledBy: by,
    }),
  ];
}

/** Deletion is final; deleting a deleted account writes nothing. */
export function decideDelete(state: ServiceAccount, by: string): NewEvent[] {
  if (!live(state)) return [];
  return [
    ServiceAccountDeleted.create({
      serviceAccountId: state.serviceAccountId,
      orgId: state.orgId,
      deletedBy: by,
    }),
  ];
}

export function decideRotate(
  state: ServiceAccount,
  secretHash: string,
  previousValidUntilMs: number,
  by: string,
): NewEvent[] {
  if (!live(state)) return [];
  return [
    ServiceAccountSecretRotated.create({
      serviceAccountId: state.serviceAccountId,
      orgId: state.orgId,
      secretHash,
      previousValidUntilMs: BigInt(previousValidUntilMs),
      rotatedBy: by,
    }),
  ];
}
