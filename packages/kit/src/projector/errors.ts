/**
 * How the projector tells a poison event from a passing outage: only a
 * HandlerFailure counts towards an event's attempts (and can dead-letter it);
 * anything transient is retried for as long as it takes.
 */

/** The projection's own code (decode or handler) threw for these messages. */
export class HandlerFailure extends Error {
  constructor(cause: unknown) {
    super(errorMessage(cause), { cause });
    this.name = "HandlerFailure";
  }
}

/**
 * The checkpoint moved under us: another process wrote this projection since
 * we read its checkpoint, so this process is no longer (or never was) its
 * single writer. The transaction was rolled back.
 */
export class FencedError extends Error {
  constructor(projection: string, what: string) {
    super(`projection ${projection}: ${what} moved under this writer; another writer is active`);
    this.name = "FencedError";
  }
}

/** A strict projection stops at an event that keeps failing instead of skipping it. */
export class HaltedError extends Error {
  readonly sequence: number;
  constructor(projection: string, sequence: number, cause: unknown) {
    super(`projection ${projection} halted at stream sequence ${sequence}: ${errorMessage(cause)}`, {
      cause,
    });
    this.name = "HaltedError";
    this.sequence = sequence;
  }
}

// SQLSTATE classes that say nothing about the event: connection (08), rollback
// (40: serialization failure, deadlock), resources (53), operator intervention
// (57: shutdown, cancel, statement timeout), system errors (58).
const TRANSIENT_SQLSTATE = /^(08|40|53|57|58)/;
// postgres.js and Node socket errors.
const TRANSIENT_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENOTFOUND",
]);

/** True for errors of the infrastructure (PostgreSQL, Redis, network), not of the event. */
export function isTransient(e: unknown): boolean {
  if (e instanceof HandlerFailure) return isTransient(e.cause);
  if (e instanceof FencedError || e instanceof HaltedError) return false;
  if (!(e instanceof Error)) return false;
  const code = (e as { code?: unknown }).code;
  if (typeof code === "string") {
    if (e.name === "PostgresError") return TRANSIENT_SQLSTATE.test(code);
    if (TRANSIENT_CODES.has(code)) return true;
  }
  // ioredis: connection gone, or a command rejected while reconnecting.
  if (e.name === "MaxRetriesPerRequestError") return true;
  return /Connection is closed|Stream isn't writeable|LOADING|READONLY|CLUSTERDOWN|TRYAGAIN/.test(e.message);
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
