import type { Reducer } from "@spool/kit";
import { ServiceAccountCreated, ServiceAccountDisabled } from "./events.js";

export type ServiceAccount =
  | { kind: "none" }
  | {
      kind: "active" | "disabled";
      serviceAccountId: string;
      orgId: string;
      name: string;
      scopes: string[];
      secretHash: string;
    };

export const serviceAccountReducer: Reducer<ServiceAccount> = {
  initial: () => ({ kind: "none" }),
  evolve: (state, event) => {
    if (ServiceAccountCreated.is(event)) {
      const e = ServiceAccountCreated.decode(event.data);
      return {
        kind: "active",
        serviceAccountId: e.serviceAccountId,
        orgId: e.orgId,
        name: e.name,
        scopes: e.scopes,
        secretHash: e.secretHash,
      };
    }
    if (ServiceAccountDisabled.is(event) && state.kind !== "none") return { ...state, kind: "disabled" };
    return state;
  },
};

/** Scopes: 1-64 of a-z, 0-9 and ':', '.', '_', '-' (e.g. "gen:produce"). */
export function scopeProblem(scope: string): string | undefined {
  return /^[a-z0-9][a-z0-9:._-]{0,63}$/.test(scope)
    ? undefined
    : "must be 1-64 of a-z, 0-9, ':', '.', '_', '-'";
}
