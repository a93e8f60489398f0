import { afterEach, describe, expect, it } from "vitest";
import {
  configurePasswordPolicy,
  DEFAULT_PASSWORD_MIN_SCORE,
  PASSWORD_MAX_LENGTH,
  passwordProblem,
} from "./password-policy.js";

afterEach(() => configurePasswordPolicy({ minScore: DEFAULT_PASSWORD_MIN_SCORE }));

describe("password policy", () => {
  it("refuses common passwords padded with digits and symbols (issue 11 item 5)", () => {
    for (const p of [
      "123456123456",
      "1234567890123456",
      "password1234!",
      "!!qwerty123456",
      "letmein123456789",
      "aaaaaaaaaaaaaaaa",
      "sunshine1234",
    ]) {
      expect(passwordProblem(p), p).toMatch(/too easy to guess/);
    }
  });

  it("refuses shipped default passwords in any case or padding", () => {
    for (const p of ["CHANGE-ME-PLEASE", "Change_Me_Please!", "spool dev password"]) {
      expect(passwordProblem(p), p).toMatch(/is a default password/);
    }
    // Padded with more than symbols, the estimator still sees them.
    for (const p of ["Change-Me-Please1", "SPOOL-DEV-PASSWORD-2024"]) {
      expect(passwordProblem(p), p).toMatch(/too easy to guess/);
    }
  });

  it("accepts a strong passphrase and the test fixtures' passwords", () => {
    for (const p of [
      "correct horse battery staple 42",
      "Quartz lantern drifts over velvet 7",
      "owner password long enough",
      "member password long",
    ]) {
      expect(passwordProblem(p), p).toBeUndefined();
    }
  });

  it("keeps the length limits", () => {
    expect(passwordProblem("xK9#vQ2!mZ")).toMatch(/at least 12 characters/);
    expect(passwordProblem("x".repeat(PASSWORD_MAX_LENGTH + 1))).toMatch(/at most 256 characters/);
    // Length is counted in characters, not UTF-16 units.
    expect(passwordProblem("😀".repeat(PASSWORD_MAX_LENGTH))).not.toMatch(/at most/);
  });

  it("refuses a password built from the account's own details", () => {
    const inputs = ["marguerite.vandersloot@quillfeather.example", "Marguerite Vandersloot", "quillfeather"];
    for (const own of ["margueritevandersloot", "vandersloot2024!"]) {
      expect(passwordProblem(own), own).toBeUndefined();
      expect(passwordProblem(own, { userInputs: inputs }), own).toMatch(/too easy to guess/);
    }
  });

  it("has a configurable minimum score", () => {
    // Guessable, but not trivially: zxcvbn scores it 2.
    const medium = "football2024!";
    expect(passwordProblem(medium)).toMatch(/at least 3 required/);
    expect(passwordProblem(medium, { minScore: 2 })).toBeUndefined();
    configurePasswordPolicy({ minScore: 2 });
    expect(passwordProblem(medium)).toBeUndefined();
    configurePasswordPolicy({ minScore: 4 });
    expect(passwordProblem("Summer2024!!")).toMatch(/at least 4 required/);
    expect(passwordProblem("correct horse battery staple 42")).toBeUndefined();
    expect(() => configurePasswordPolicy({ minScore: 5 })).toThrow(RangeError);
  });

  it("bounds the estimator's work on long crafted passwords", () => {
    // Only the first 64 characters are estimated: a weak beginning is refused whatever follows.
    expect(passwordProblem(`${"1".repeat(64)}${"Zq8!vR2#kW5@".repeat(10)}`)).toMatch(/too easy/);
    expect(passwordProblem("1".repeat(PASSWORD_MAX_LENGTH))).toMatch(/too easy/);
  });
});
