// Typed failures of safeFetch. A failure carries a stable `reason` code, the
// redirect hop it happened at (0 = the URL the caller gave) and the host it
// concerns; never a resolved address, a server path or a library's own text.
import { FailedPreconditionError, InvalidArgumentError, type SpoolError } from "../errors.js";

/** Refusals by policy: the URL (or a redirect's target) is not one this client will fetch. */
export const SSRF_REFUSAL_REASONS = [
  "INVALID_URL",
  "SCHEME_NOT_ALLOWED",
  "USERINFO_NOT_ALLOWED",
  "PORT_NOT_ALLOWED",
  "ADDRESS_BLOCKED",
  "REDIRECT_REFUSED",
  "INSECURE_REDIRECT",
  "TOO_MANY_REDIRECTS",
] as const;

/** Failures of the exchange itself: the remote's answer or the network broke a limit or failed. */
export const FETCH_FAILURE_REASONS = [
  "DNS_FAILED",
  "CONNECT_FAILED",
  "TLS_ERROR",
  "TIMEOUT",
  "ABORTED",
  "PROTOCOL_ERROR",
  "RESPONSE_TOO_LARGE",
  "DECOMPRESSION_LIMIT",
  "UNSUPPORTED_ENCODING",
  "CONTENT_TYPE_NOT_ALLOWED",
] as const;

/** Refusals that are about the URL itself (as opposed to what its server answered). */
const URL_REFUSALS: ReadonlySet<SafeFetchReason> = new Set<SafeFetchReason>([
  "INVALID_URL",
  "SCHEME_NOT_ALLOWED",
  "USERINFO_NOT_ALLOWED",
  "PORT_NOT_ALLOWED",
  "ADDRESS_BLOCKED",
]);

export type SsrfRefusalReason = (typeof SSRF_REFUSAL_REASONS)[number];
export type SafeFetchReason = SsrfRefusalReason | (typeof FETCH_FAILURE_REASONS)[number];

export class SafeFetchError extends Error {
  readonly reason: SafeFetchReason;
  /** Redirect hop the failure happened at: 0 is the caller's URL, 1 the first redirect's target, … */
  readonly hop: number;
  /** The host (name or literal, as parsed from the URL) the failure concerns, when known. */
  readonly host: string | undefined;
  constructor(reason: SafeFetchReason, message: string, options: { hop?: number; host?: string } = {}) {
    super(`${reason}: ${message}`);
    this.name = new.target.name;
    this.reason = reason;
    this.hop = options.hop ?? 0;
    this.host = options.host;
  }
}

/** A policy refusal (scheme, userinfo, port, address, redirect rules): no bytes were sent to the refused target. */
export class SsrfRefusedError extends SafeFetchError {
  declare readonly reason: SsrfRefusalReason;
  constructor(reason: SsrfRefusalReason, message: string, options: { hop?: number; host?: string } = {}) {
    super(reason, message, options);
  }
}

export function isSafeFetchError(e: unknown): e is SafeFetchError {
  return e instanceof SafeFetchError;
}

/**
 * The kit error a service returns for a failed fetch of a URL its caller
 * supplied in request field `field`: a refusal of that URL itself (hop 0) is
 * INVALID_ARGUMENT with a field violation; anything the remote did (a refused
 * redirect, a limit broken, unreachable, bad TLS, timeout) is
 * FAILED_PRECONDITION. Both carry the reason code, so callers can act on it.
 */
export function safeFetchErrorToSpoolError(error: SafeFetchError, field = "url"): SpoolError {
  if (error.hop === 0 && URL_REFUSALS.has(error.reason)) {
    return new InvalidArgumentError(`${field}: ${error.message}`, [{ field, description: error.message }]);
  }
  const where = error.hop > 0 ? ` (after ${error.hop} redirect${error.hop === 1 ? "" : "s"})` : "";
  return new FailedPreconditionError(`fetching ${field} failed: ${error.message}${where}`);
}
