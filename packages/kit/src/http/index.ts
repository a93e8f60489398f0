export {
  type AddressVerdict,
  canonicalAddress,
  classifyAddress,
  isAllowedAddress,
} from "./address-policy.js";
export {
  FETCH_FAILURE_REASONS,
  isSafeFetchError,
  SafeFetchError,
  type SafeFetchReason,
  SSRF_REFUSAL_REASONS,
  type SsrfRefusalReason,
  SsrfRefusedError,
  safeFetchErrorToSpoolError,
} from "./errors.js";
export {
  SAFE_FETCH_DEFAULTS,
  type SafeFetchOptions,
  type SafeLookup,
  type SafeResponse,
  safeFetch,
} from "./safe-fetch.js";
