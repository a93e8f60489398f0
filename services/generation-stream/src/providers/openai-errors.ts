// How the OpenAI provider reads and words a provider's failures: which ones
// a retry may fix, how long the provider asks us to wait, and a short,
// key-free excerpt of what it said.
import { ProviderError, type ProviderErrorReason } from "./types.js";

const ERROR_DETAIL_LIMIT = 200;
const ERROR_BODY_LIMIT = 4096;

export const TIMEOUT_MESSAGES: Partial<Record<ProviderErrorReason, string>> = {
  connect_timeout: "model provider did not respond in time",
  first_token_timeout: "model provider produced no output in time",
  idle_timeout: "model provider stalled mid-stream",
};

/** Timeouts, broken connections, 408, 429 and 5xx may succeed on another try. */
export function isTransient(reason: ProviderErrorReason, status: number | undefined): boolean {
  switch (reason) {
    case "connect_timeout":
    case "first_token_timeout":
    case "idle_timeout":
      return true;
    case "http_error":
      return status === undefined || status === 408 || status === 429 || status >= 500;
    case "protocol_error":
    case "cancelled":
      return false;
    default: {
      const never: never = reason;
      return never;
    }
  }
}

/** `retry-after-ms` (OpenAI), else `retry-after` as seconds or an HTTP date. */
export function parseRetryAfter(headers: Headers): number | undefined {
  const ms = Number(headers.get("retry-after-ms") ?? Number.NaN);
  if (Number.isFinite(ms) && ms >= 0) return ms;
  const value = headers.get("retry-after")?.trim();
  if (!value) return undefined;
  if (/^\d+(\.\d+)?$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

export function gaveUp(error: ProviderError, attempts: number): ProviderError {
  return new ProviderError(error.reason, `${error.message} (gave up after ${attempts} attempts)`, {
    retryable: error.retryable,
    ...(error.status === undefined ? {} : { status: error.status }),
    ...(error.retryAfterMs === undefined ? {} : { retryAfterMs: error.retryAfterMs }),
    cause: error,
  });
}

/**
 * Formats a provider's error payload for a message: its `message` if any,
 * the API key and bearer tokens removed, truncated; "" when there is nothing.
 */
export function errorDetail(payload: unknown, apiKey: string): string {
  let text: string;
  if (typeof payload === "string") text = payload;
  else if (
    payload &&
    typeof payload === "object" &&
    "message" in payload &&
    typeof payload.message === "string"
  ) {
    text = payload.message;
  } else text = JSON.stringify(payload) ?? "";
  // Providers echo credentials back (OpenAI: "Incorrect API key provided: …").
  // Redact before truncating, so a cut can never leave part of the key behind.
  if (apiKey !== "") text = text.split(apiKey).join("[redacted]");
  text = text
    .replace(/Bearer\s+\S+/gi, "Bearer [redacted]")
    .replace(/\s+/g, " ")
    .trim();
  if (text === "") return "";
  return `: ${text.length > ERROR_DETAIL_LIMIT ? `${text.slice(0, ERROR_DETAIL_LIMIT)}…` : text}`;
}

/** errorDetail of an error response's body, read with a size and time bound. */
export async function responseErrorDetail(res: Response, timeoutMs: number, apiKey: string): Promise<string> {
  if (res.body === null) return "";
  const reader = res.body.getReader();
  // cancel() resolves a pending read as done, so a stalled error body cannot hang us.
  const timer = setTimeout(() => void reader.cancel().catch(() => {}), timeoutMs);
  const parts: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < ERROR_BODY_LIMIT) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      size += value.byteLength;
    }
  } catch {
    // The status is what matters; a body we cannot read adds nothing.
  } finally {
    clearTimeout(timer);
    void reader.cancel().catch(() => {});
  }
  const text = new TextDecoder().decode(Buffer.concat(parts).subarray(0, ERROR_BODY_LIMIT));
  try {
    const json: unknown = JSON.parse(text);
    return errorDetail(json && typeof json === "object" && "error" in json ? json.error : json, apiKey);
  } catch {
    return errorDetail(text, apiKey);
  }
}
