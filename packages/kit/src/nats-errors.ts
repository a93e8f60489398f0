/**
 * Errors of a NATS outage that says nothing about the request: the server is
 * restarting or unreachable (the client reconnects by itself), JetStream is
 * not answering yet, or a request timed out. Worth retrying; anything else
 * (a wrong sequence, a closed connection, a bad request) is not.
 */

/** Error names of @nats-io/nats-core and @nats-io/jetstream (matched by name: several copies may be loaded). */
const TRANSIENT_NAMES = new Set([
  "TimeoutError",
  "NoResponders",
  "NoRespondersError",
  "ConnectionError",
  "JetStreamNotEnabled",
  // Ours (nats.ts): refused at once because the client is reconnecting.
  "NatsDisconnectedError",
]);

// Node socket errors on the way to the server.
const TRANSIENT_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH"]);

/** True for a NATS / JetStream error a retry may clear (timeouts, disconnection, 503 no responders). */
export function isTransientNatsError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  if (TRANSIENT_NAMES.has(e.name)) return true;
  // RequestError wraps "503 no responders" (JetStream not ready, e.g. just after a restart).
  if (e.name === "RequestError") return /no responders|503/i.test(e.message) || isTransientNatsError(e.cause);
  // JetStream API errors with status 503: "JetStream system temporarily unavailable", no quorum.
  if (e.name === "JetStreamApiError" || e.name === "JetStreamStatusError") {
    const status = (e as { status?: unknown; code?: unknown }).status ?? (e as { code?: unknown }).code;
    return status === 503 || status === 408;
  }
  const code = (e as { code?: unknown }).code;
  return typeof code === "string" && TRANSIENT_CODES.has(code);
}
