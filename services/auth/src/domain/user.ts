import { type EventOf, type NewEvent, type Reducer, unreachable } from "@spool/kit";
import {
  AuthEvents,
  Subjects,
  UserCreated,
  UserDeleted,
  UserDisabled,
  UserEnabled,
  UserPasswordReset,
  UserRolesChanged,
} from "./events.js";

/** The events of a user subject; any other type there decodes as unknown and is ignored. */
export const UserEvents = AuthEvents.pick(
  "UserCreated",
  "UserRolesChanged",
  "PasswordChanged",
  "UserPasswordReset",
  "UserDisabled",
  "UserEnabled",
  "UserDeleted",
);
export type UserEvent = EventOf<typeof UserEvents>;

export interface UserData {
  userId: string;
  orgId: string;
  email: string;
  displayName: string;
  roles: string[];
  passwordHash: string;
  operator: boolean;
  createdAtMs: number;
  /**
   * When the user was last withdrawn (disabled, deleted, password reset), ms;
   * 0 if never. Every token issued up to then is refused by every verifier, so
   * auth issues the user's next token only after it (see firstIssuableMs).
   */
  notBeforeMs: number;
}

/** A user: active, disabled (no login until enabled) or deleted (final). */
export type User =
  | { kind: "none" }
  | (UserData & { kind: "active" })
  | (UserData & { kind: "disabled" })
  | (UserData & { kind: "deleted" });

export type ExistingUser = Exclude<User, { kind: "none" | "deleted" }>;

export const userReducer: Reducer<User, UserEvent> = {
  initial: () => ({ kind: "none" }),
  decode: UserEvents.decode,
  evolve: (state, event) => {
    if (event.type === "UserCreated") {
      const e = event.data;
      return {
        kind: "active",
        userId: e.userId,
        orgId: e.orgId,
        email: e.email,
        displayName: e.displayName,
        roles: e.roles,
        passwordHash: e.passwordHash,
        operator: e.operator,
        createdAtMs: event.meta.time.getTime(),
        notBeforeMs: 0,
      };
    }
    if (state.kind === "none" || state.kind === "deleted") return state;
    const at = event.meta.time.getTime();
    switch (event.type) {
      case "UserRolesChanged":
        return { ...state, roles: event.data.roles };
      case "PasswordChanged":
        return { ...state, passwordHash: event.data.passwordHash };
      case "UserPasswordReset":
        return { ...state, passwordHash: event.data.passwordHash, notBeforeMs: at };
      case "UserDisabled":
        return { ...state, kind: "disabled", notBeforeMs: at };
      case "UserEnabled":
        return { ...state, kind: "active" };
      case "UserDeleted":
        return { ...state, kind: "deleted", notBeforeMs: at };
      case "unknown":
        return state;
      default:
        return unreachable(event);
    }
  },
};

/** A user aggregate: its subject and reducer, for aggregate(store, UserAggregate). */
export const UserAggregate = { subject: Subjects.user, reducer: userReducer };

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

/** User ids are UUIDs (bootstrap included); anything else is a malformed id. */
export function userIdProblem(id: string): string | undefined {
  return /^[A-Za-z0-9_-]{1,64}$/.test(id) ? undefined : "must be a user id";
}

/** Creating a user that exists writes nothing (the caller decides whether that is a conflict). */
export function decideCreateUser(state: User, user: NewUser): NewEvent[] {
  if (state.kind !== "none") return [];
  return [UserCreated.create(user)];
}

/** Roles of an active or disabled user; a deleted one is gone. */
export function decideSetRoles(state: User, roles: string[]): NewEvent[] {
  if (state.kind !== "active" && state.kind !== "disabled") return [];
  const same = state.roles.length === roles.length && state.roles.every((r, i) => r === roles[i]);
  if (same) return [];
  return [
    UserRolesChanged.create({ userId: state.userId, orgId: state.orgId, previousRoles: state.roles, roles }),
  ];
}

/** Disabling a disabled user writes nothing; a deleted user cannot be disabled. */
export function decideDisable(state: User, by: string): NewEvent[] {
  if (state.kind !== "active") return [];
  return [UserDisabled.create({ userId: state.userId, orgId: state.orgId, disabledBy: by })];
}

export function decideEnable(state: User, by: string): NewEvent[] {
  if (state.kind !== "disabled") return [];
  return [UserEnabled.create({ userId: state.userId, orgId: state.orgId, enabledBy: by })];
}

/** Deletion is final; deleting a deleted user writes nothing. */
export function decideDelete(state: User, by: string): NewEvent[] {
  if (state.kind !== "active" && state.kind !== "disabled") return [];
  return [UserDeleted.create({ userId: state.userId, orgId: state.orgId, deletedBy: by })];
}

export function decideResetPassword(state: User, passwordHash: string, by: string): NewEvent[] {
  if (state.kind !== "active" && state.kind !== "disabled") return [];
  return [UserPasswordReset.create({ userId: state.userId, orgId: state.orgId, passwordHash, resetBy: by })];
}
