import type { NewEvent, RecordedEvent, Reducer } from "@spool/kit";
import { PasswordChanged, UserCreated, UserRolesChanged } from "./events.js";

export type User =
  | { kind: "none" }
  | {
      kind: "active";
      userId: string;
      orgId: string;
      email: string;
      displayName: string;
      roles: string[];
      passwordHash: string;
      operator: boolean;
      createdAtMs: number;
    };

export const userReducer: Reducer<User> = {
  initial: () => ({ kind: "none" }),
  evolve: (state: User, event: RecordedEvent): User => {
    if (UserCreated.is(event)) {
      const e = UserCreated.decode(event.data);
      return {
        kind: "active",
        userId: e.userId,
        orgId: e.orgId,
        email: e.email,
        displayName: e.displayName,
        roles: e.roles,
        passwordHash: e.passwordHash,
        operator: e.operator,
        createdAtMs: event.time.getTime(),
      };
    }
    if (state.kind === "none") return state;
    if (UserRolesChanged.is(event)) return { ...state, roles: UserRolesChanged.decode(event.data).roles };
    if (PasswordChanged.is(event))
      return { ...state, passwordHash: PasswordChanged.decode(event.data).passwordHash };
    return state;
  },
};

export interface NewUser {
  userId: string;
  orgId: string;
  email: string;
  displayName: string;
  roles: string[];
  passwordHash: string;
  createdVia: "admin" | "signup" | "bootstrap";
  operator: boolean;
}

/** Creating a user that exists writes nothing (the caller decides whether that is a conflict). */
export function decideCreateUser(state: User, user: NewUser): NewEvent[] {
  if (state.kind !== "none") return [];
  return [UserCreated.create(user)];
}

export function decideSetRoles(state: User, roles: string[]): NewEvent[] {
  if (state.kind !== "active") return [];
  const same = state.roles.length === roles.length && state.roles.every((r, i) => r === roles[i]);
  if (same) return [];
  return [
    UserRolesChanged.create({ userId: state.userId, orgId: state.orgId, previousRoles: state.roles, roles }),
  ];
}
