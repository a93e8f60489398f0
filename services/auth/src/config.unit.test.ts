import { randomBytes } from "node:crypto";
import { ConfigError } from "@spool/kit";
import { describe, expect, it } from "vitest";
import { loadAuthConfig } from "./config.js";

const b64 = (bytes: Buffer | string) => Buffer.from(bytes).toString("base64");

function env(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    SPOOL_ENV: "production",
    SPOOL_MASTER_KEYS: `k1:${b64(randomBytes(32))}`,
    SPOOL_TOKEN_SECRET: b64(randomBytes(32)),
    SPOOL_BOOTSTRAP_ADMIN_EMAIL: "admin@spool.test",
    SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "correct horse battery staple 42",
    ...overrides,
  };
}

/** The start-up problems loadAuthConfig reports, or [] when it accepts the environment. */
function problems(e: Record<string, string>): readonly string[] {
  try {
    loadAuthConfig(e);
    return [];
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.problems;
  }
}

describe("auth start-up refuses weak or malformed secrets (issue 11 item 6)", () => {
  it("accepts random secrets and a strong bootstrap password in production", () => {
    const e = env();
    expect(problems(e)).toEqual([]);
    const config = loadAuthConfig(e);
    expect(config.tokenSecret).toEqual(Buffer.from(e.SPOOL_TOKEN_SECRET!, "base64"));
    expect(config.masterKeys[0]?.key).toEqual(Buffer.from(e.SPOOL_MASTER_KEYS!.slice(3), "base64"));
  });

  const good = b64(randomBytes(32));
  const cases: [string, Record<string, string>, RegExp][] = [
    [
      "a master key with '*' inside",
      { SPOOL_MASTER_KEYS: `k1:${good.slice(0, 10)}*${good.slice(10)}` },
      /^SPOOL_MASTER_KEYS: master key k1: is not canonical base64/,
    ],
    [
      "a master key with bytes after '='",
      { SPOOL_MASTER_KEYS: `k1:${good}QUJD` },
      /^SPOOL_MASTER_KEYS: master key k1: is not canonical base64/,
    ],
    [
      "a master key of 32 zero bytes",
      { SPOOL_MASTER_KEYS: `k1:${b64(Buffer.alloc(32))}` },
      /^SPOOL_MASTER_KEYS: master key k1: is one byte repeated/,
    ],
    [
      "a token secret of one repeated character",
      { SPOOL_TOKEN_SECRET: "a".repeat(44) },
      /^SPOOL_TOKEN_SECRET: has only \d+ distinct byte values/,
    ],
    [
      "a token secret of 'A's (zero bytes)",
      { SPOOL_TOKEN_SECRET: "A".repeat(44) },
      /^SPOOL_TOKEN_SECRET: is one byte repeated/,
    ],
    [
      "a token secret that is an English phrase, as base64",
      { SPOOL_TOKEN_SECRET: b64("Pack my box with five dozen liquor jugs, please") },
      /^SPOOL_TOKEN_SECRET: decodes to printable text/,
    ],
    [
      "a token secret that is an English phrase, as text",
      { SPOOL_TOKEN_SECRET: "pack my box with five dozen liquor jugs please" },
      /^SPOOL_TOKEN_SECRET: is not canonical base64/,
    ],
    [
      "a token secret equal to the master key",
      { SPOOL_MASTER_KEYS: `k1:${good}`, SPOOL_TOKEN_SECRET: good },
      /^SPOOL_TOKEN_SECRET: must not be \(or contain\) a master key/,
    ],
    [
      "a token secret equal to an older master key",
      { SPOOL_MASTER_KEYS: `k2:${b64(randomBytes(32))},k1:${good}`, SPOOL_TOKEN_SECRET: good },
      /^SPOOL_TOKEN_SECRET: must not be \(or contain\) a master key/,
    ],
    [
      "a token secret that is a master key plus padding",
      {
        SPOOL_MASTER_KEYS: `k1:${good}`,
        SPOOL_TOKEN_SECRET: b64(Buffer.concat([Buffer.from(good, "base64"), randomBytes(4)])),
      },
      /^SPOOL_TOKEN_SECRET: must not be \(or contain\) a master key/,
    ],
    [
      "a default bootstrap password in capitals",
      { SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "CHANGE-ME-PLEASE" },
      /^SPOOL_BOOTSTRAP_ADMIN_PASSWORD: a default password is refused in production/,
    ],
    [
      "a default bootstrap password respelled",
      { SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "Change_Me_Please!" },
      /^SPOOL_BOOTSTRAP_ADMIN_PASSWORD: a default password is refused in production/,
    ],
    [
      "a digit-padded bootstrap password (123456123456…)",
      { SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "1234567890123456" },
      /^SPOOL_BOOTSTRAP_ADMIN_PASSWORD: is too easy to guess/,
    ],
    [
      "a bootstrap password made of the admin's email",
      { SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "admin@spool.test2024" },
      /^SPOOL_BOOTSTRAP_ADMIN_PASSWORD: is too easy to guess/,
    ],
  ];
  for (const [name, overrides, message] of cases) {
    it(`refuses ${name}`, () => {
      const found = problems(env(overrides));
      expect(
        found.some((p) => message.test(p)),
        found.join("\n"),
      ).toBe(true);
      // Values are never echoed.
      for (const value of Object.values(overrides)) expect(found.join("\n")).not.toContain(value);
    });
  }

  it("decodes strictly and refuses weak secrets in development mode too", () => {
    expect(problems(env({ SPOOL_ENV: "development", SPOOL_MASTER_KEYS: `k1:${good}QUJD` }))).toEqual([
      expect.stringMatching(/^SPOOL_MASTER_KEYS: master key k1: is not canonical base64/),
    ]);
    expect(problems(env({ SPOOL_ENV: "development", SPOOL_TOKEN_SECRET: "A".repeat(44) }))).toEqual([
      expect.stringMatching(/^SPOOL_TOKEN_SECRET: is one byte repeated/),
    ]);
    expect(problems(env({ SPOOL_ENV: "test", SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "123456123456" }))).toEqual([
      expect.stringMatching(/^SPOOL_BOOTSTRAP_ADMIN_PASSWORD: is too easy to guess/),
    ]);
  });

  it("reads the minimum password score, 0-4", () => {
    const e = env({ SPOOL_ENV: "development", SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "football2024!" });
    expect(problems(e)).toEqual([
      expect.stringMatching(/SPOOL_BOOTSTRAP_ADMIN_PASSWORD: is too easy to guess/),
    ]);
    expect(problems({ ...e, SPOOL_PASSWORD_MIN_SCORE: "2" })).toEqual([]);
    expect(loadAuthConfig(env()).PASSWORD_MIN_SCORE).toBe(3);
    expect(problems({ ...e, SPOOL_PASSWORD_MIN_SCORE: "5" })).toEqual([
      expect.stringMatching(/^SPOOL_PASSWORD_MIN_SCORE:/),
    ]);
  });
});
