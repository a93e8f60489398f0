import { ZxcvbnFactory } from "@zxcvbn-ts/core";
import { adjacencyGraphs, dictionary } from "@zxcvbn-ts/language-common";

export const PASSWORD_MIN_LENGTH = 12;
/** Upper bound keeps hashing cost bounded per request. */
export const PASSWORD_MAX_LENGTH = 256;
/** zxcvbn score (0-4) a password needs unless configured otherwise (SPOOL_PASSWORD_MIN_SCORE). */
export const DEFAULT_PASSWORD_MIN_SCORE = 3;

/**
 * Passwords shipped in examples, docs and scripts. They are refused in any
 * spelling: the estimator knows them as a dictionary, so case changes, l33t
 * and padding around them still score as guessable.
 */
export const KNOWN_DEFAULT_PASSWORDS: readonly string[] = [
  "change-me-please",
  "changemeplease",
  "change-me",
  "changeme",
  "spool-dev-password",
  "spooldevpassword",
  "admin",
  "password",
];

/** Letters and digits only, lower case: "CHANGE_ME-please" and "change-me-please" are one password. */
export function foldPassword(password: string): string {
  return password
    .normalize("NFKC")
    .toLowerCase()
    .replace(/[^\p{L}\p{N}]+/gu, "");
}

const FOLDED_DEFAULTS = new Set(KNOWN_DEFAULT_PASSWORDS.map(foldPassword));

/**
 * The estimator only looks at this many characters (a longer password is
 * judged by its beginning: a strong prefix makes a strong password), and caps
 * l33t substitutions. With zxcvbn's defaults a crafted 256-character password
 * costs seconds of CPU on the event loop; with these, ordinary passwords take
 * a few ms and the worst inputs found about 10-30 ms (measured on a busy
 * 2-core machine).
 */
const ESTIMATED_CHARS = 64;
const L33T_MAX_SUBSTITUTIONS = 10;

// Built once: the factory indexes its dictionaries (~50k common passwords,
// diceware words, keyboard layouts) at construction.
let estimator: ZxcvbnFactory | undefined;
function zxcvbn(): ZxcvbnFactory {
  estimator ??= new ZxcvbnFactory({
    dictionary: { ...dictionary, "spool-defaults": [...KNOWN_DEFAULT_PASSWORDS] },
    graphs: adjacencyGraphs,
    maxLength: ESTIMATED_CHARS,
    l33tMaxSubstitutions: L33T_MAX_SUBSTITUTIONS,
  });
  return estimator;
}

let configuredMinScore = DEFAULT_PASSWORD_MIN_SCORE;

/**
 * Sets the minimum score for every later check that does not pass its own
 * (the auth service calls it once at start with SPOOL_PASSWORD_MIN_SCORE), so
 * every place that sets a password applies the same configured policy.
 */
export function configurePasswordPolicy(options: { minScore: number }): void {
  configuredMinScore = checkedScore(options.minScore);
  zxcvbn(); // builds the dictionaries now rather than in the first request
}

function checkedScore(score: number): number {
  if (!Number.isInteger(score) || score < 0 || score > 4) {
    throw new RangeError(`password minimum score must be an integer 0-4 (got ${score})`);
  }
  return score;
}

export interface PasswordPolicyOptions {
  /** 0-4; default: the configured minimum (3 unless configured). */
  minScore?: number;
  /**
   * What the password must not be built from: the account's email, display
   * name, organisation slug. Emails are also split into their parts.
   */
  userInputs?: readonly (string | undefined)[];
}

function inputsOf(values: readonly (string | undefined)[]): string[] {
  const out = new Set<string>();
  for (const value of values) {
    const v = value?.trim().toLowerCase();
    if (!v) continue;
    out.add(v);
    // "jane.doe@acme.test" also yields "jane", "doe", "acme", "test".
    for (const part of v.split(/[^\p{L}\p{N}]+/u)) if (part.length >= 3) out.add(part);
  }
  return [...out];
}

/**
 * Why a password is refused, or undefined when it is acceptable: too short or
 * long, or too easy to guess by zxcvbn's estimate (common and breached
 * passwords, keyboard walks, repeats, sequences, dates, l33t, the user's own
 * details, and all of them padded with digits and symbols).
 */
export function passwordProblem(password: string, options: PasswordPolicyOptions = {}): string | undefined {
  const length = [...password].length;
  if (length < PASSWORD_MIN_LENGTH) return `must be at least ${PASSWORD_MIN_LENGTH} characters`;
  if (length > PASSWORD_MAX_LENGTH) return `must be at most ${PASSWORD_MAX_LENGTH} characters`;
  if (FOLDED_DEFAULTS.has(foldPassword(password))) return "is a default password from the examples";
  const minScore = options.minScore === undefined ? configuredMinScore : checkedScore(options.minScore);
  const { score } = zxcvbn().check(password.normalize("NFKC"), inputsOf(options.userInputs ?? []));
  if (score < minScore) {
    return `is too easy to guess (strength ${score} of 4, at least ${minScore} required); use a longer passphrase of unrelated words`;
  }
  return undefined;
}
