import { dictionary } from "@zxcvbn-ts/language-common";

export const PASSWORD_MIN_LENGTH = 12;
/** Upper bound keeps hashing cost bounded per request. */
export const PASSWORD_MAX_LENGTH = 256;

// ~49k most common passwords (zxcvbn-ts's list), compared case-insensitively.
const COMMON = new Set((dictionary["passwords-common"] as string[]).map((p) => p.toLowerCase()));

/**
 * Why a password is refused, or undefined when it is acceptable. A password
 * is refused when it is too short or long, or when it is a common password,
 * alone or padded with digits and symbols ("password1234!").
 */
export function passwordProblem(password: string): string | undefined {
  const length = [...password].length;
  if (length < PASSWORD_MIN_LENGTH) return `must be at least ${PASSWORD_MIN_LENGTH} characters`;
  if (length > PASSWORD_MAX_LENGTH) return `must be at most ${PASSWORD_MAX_LENGTH} characters`;
  const lower = password.normalize("NFKC").toLowerCase();
  const core = lower.replace(/[\d\W_]+$/u, "").replace(/^[\d\W_]+/u, "");
  if (COMMON.has(lower) || (core.length >= 4 && COMMON.has(core))) return "is too common";
  if (/^(.)\1+$/u.test(lower)) return "is a single repeated character";
  return undefined;
}
