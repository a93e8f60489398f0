import { deciderSpec } from "@spool/testing";
import { describe, expect, it } from "vitest";
import { UserCreated } from "./events.js";
import {
  decideCreateUser,
  decideDelete,
  decideDisable,
  decideEnable,
  decideResetPassword,
  decideSetRoles,
  userReducer,
} from "./user.js";

const T0 = 1_700_000_000_000;
const spec = deciderSpec(userReducer, { subject: "auth.user.u1", nowMs: T0 });
const newUser = {
  userId: "u1",
  orgId: "o1",
  email: "a@spool.test",
  displayName: "A",
  roles: ["member"],
  passwordHash: "h0",
  createdVia: "admin" as const,
  operator: false,
};
const created = UserCreated.create(newUser);

describe("user", () => {
  it("is created once", () => {
    spec
      .given()
      .when((s) => decideCreateUser(s, newUser))
      .thenEvents({ type: "UserCreated", data: { userId: "u1", orgId: "o1", roles: ["member"] } });
    spec
      .given(created)
      .when((s) => decideCreateUser(s, newUser))
      .thenNothing();
  });

  it("changes roles only when they differ", () => {
    spec
      .given(created)
      .when((s) => decideSetRoles(s, ["admin"]))
      .thenEvents({ type: "UserRolesChanged", data: { previousRoles: ["member"], roles: ["admin"] } });
    spec
      .given(created)
      .when((s) => decideSetRoles(s, ["member"]))
      .thenNothing();
  });

  it("disable, enable and delete are idempotent and set the not-before of withdrawals", () => {
    const disable = spec.given(created).when((s) => decideDisable(s, "admin1"));
    disable.thenEvents({ type: "UserDisabled", data: { disabledBy: "admin1" } });
    expect(disable.state(T0 + 5)).toMatchObject({ kind: "disabled", notBeforeMs: T0 + 5 });
    const disabled = spec.given(created, {
      event: disable.thenEvents({ type: "UserDisabled" })[0]!,
      atMs: T0 + 5,
    });
    disabled.when((s) => decideDisable(s, "admin1")).thenNothing();
    const enable = disabled.when((s) => decideEnable(s, "admin1"));
    enable.thenEvents({ type: "UserEnabled" });
    expect(enable.state(T0 + 6)).toMatchObject({ kind: "active", notBeforeMs: T0 + 5 });
    const del = disabled.when((s) => decideDelete(s, "admin1"));
    del.thenEvents({ type: "UserDeleted", data: { deletedBy: "admin1" } });
    const deleted = disabled.given({ event: del.thenEvents({ type: "UserDeleted" })[0]!, atMs: T0 + 7 });
    expect(deleted.state).toMatchObject({ kind: "deleted", notBeforeMs: T0 + 7 });
    deleted.when((s) => decideDelete(s, "admin1")).thenNothing();
    deleted.when((s) => decideEnable(s, "admin1")).thenNothing();
    deleted.when((s) => decideResetPassword(s, "h1", "admin1")).thenNothing();
  });

  it("a password reset replaces the hash and withdraws earlier tokens", () => {
    const reset = spec.given(created).when((s) => decideResetPassword(s, "h1", "admin1"));
    reset.thenEvents({ type: "UserPasswordReset", data: { passwordHash: "h1", resetBy: "admin1" } });
    expect(reset.state(T0 + 9)).toMatchObject({ kind: "active", passwordHash: "h1", notBeforeMs: T0 + 9 });
  });

  it("an event type this version does not know is skipped, not a crash", () => {
    const history = spec.given(created);
    const unknown = {
      type: "spool.auth.v1.UserRenamed",
      schemaVersion: 1,
      data: new Uint8Array([10, 1, 65]),
    };
    expect(history.given(unknown).state).toEqual(history.state);
  });
});
