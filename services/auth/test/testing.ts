// @spool/auth/testing: what other packages' tests and the benchmarks use of
// auth. Test-only, so it is exported under the @spool/source condition alone.

/** The password hashing the auth benchmark measures. */
export { ARGON2_OPTIONS, hashPassword, verifyPassword } from "../src/app/passwords.js";
/** Auth's own events, for tests that write auth history directly (a state older code left behind). */
export { ServiceAccountCreated, Subjects } from "../src/domain/events.js";
export * from "./harness.js";
