import { connect, type NatsConnection } from "@nats-io/transport-node";
import { UnavailableError } from "./errors.js";
import type { Logger } from "./logger.js";
import { isTransientNatsError } from "./nats-errors.js";
import { sleep } from "./transient.js";

export interface NatsOptions {
  url: string;
  /** Shown in the server's connection list. */
  name: string;
  /**
   * Keep trying (with backoff, logging each failure) until the first
   * connection succeeds, instead of failing at once: a service started
   * before NATS waits for it. Services set it; tools and tests fail fast.
   */
  waitOnFirstConnect?: boolean;
  /** Where waiting is logged (with waitOnFirstConnect). */
  logger?: Logger | undefined;
  /** Stops waiting (rejects with the signal's reason): a shutdown during start-up. */
  signal?: AbortSignal | undefined;
  /**
   * nats.js builds two Error objects (stack captures) per request so that a
   * failed request shows where it was made ("async traces"); at a producer's
   * append rate that was ~9 % of generation-stream's CPU (docs/BENCHMARKS.md).
   * Off by default (true here): the kit annotates errors at its own NATS call
   * sites instead (withNatsContext), paying only when a request fails.
   * Set false to get nats.js's traces back while debugging.
   */
  noAsyncTraces?: boolean | undefined;
}

/** Longest pause between first-connection attempts. */
const MAX_CONNECT_DELAY_MS = 5_000;

/** Connects with reconnects forever: a NATS restart must not end the process. */
export async function connectNats(options: NatsOptions): Promise<NatsConnection> {
  let delayMs = 250;
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    try {
      const nc = await connect({
        servers: options.url.split(",").map((s) => s.trim()),
        name: options.name,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 500,
        pingInterval: 10_000,
        // Per attempt; the loop below does the waiting.
        timeout: 5_000,
        noAsyncTraces: options.noAsyncTraces ?? true,
      });
      coalesceWrites(nc);
      trackConnection(nc);
      if (attempt > 1) options.logger?.info({ url: redactUrl(options.url), attempt }, "connected to NATS");
      return nc;
    } catch (e) {
      const error = new UnavailableError(`cannot connect to NATS at ${redactUrl(options.url)}`, { cause: e });
      // Bad credentials or a bad URL will not get better by waiting.
      if (!options.waitOnFirstConnect || !isTransientNatsError(e) || options.signal?.aborted) throw error;
      const waitMs = Math.round(delayMs * (0.5 + Math.random() / 2));
      options.logger?.warn(
        { dependency: "nats", url: redactUrl(options.url), attempt, retryInMs: waitMs, err: e },
        "waiting for NATS: cannot connect",
      );
      await sleep(waitMs, options.signal);
      delayMs = Math.min(MAX_CONNECT_DELAY_MS, delayMs * 2);
    }
  }
}

/** The part of nats.js's (internal) protocol handler that coalesceWrites replaces. */
interface OutboundProtocol {
  flushPending(): void;
  outbound: { size(): number };
  pendingLimit: number;
}

const COALESCED = new WeakSet<object>();

/**
 * Makes the connection write what its callbacks queued once per event-loop
 * turn instead of once per microtask turn, and returns whether it could.
 *
 * nats.js flushes its outbound buffer in a microtask after the first command
 * queued, so every timer or I/O callback that publishes (each token append,
 * each pull) costs one socket write: on a loopback TCP socket a syscall that
 * also runs the server's receive path, 18 % of generation-stream's busy time
 * at 5,000 appends/s (docs/BENCHMARKS.md). Flushing on setImmediate instead
 * sends everything the turn's callbacks queued in one write, before the loop
 * waits for I/O again: nothing waits for a timer, and a full buffer
 * (nats.js's pendingLimit, 32 KiB) is still written at once.
 *
 * nats.js has no option for this, so it replaces the handler's flushPending
 * on this connection (the handler outlives reconnects). If a nats.js upgrade
 * changes that internal, nothing is replaced and false is returned (the unit
 * test fails, so the upgrade is noticed).
 */
export function coalesceWrites(nc: NatsConnection): boolean {
  const protocol = (nc as unknown as { protocol?: Partial<OutboundProtocol> }).protocol;
  if (
    protocol === undefined ||
    typeof protocol.flushPending !== "function" ||
    typeof protocol.outbound?.size !== "function" ||
    typeof protocol.pendingLimit !== "number"
  ) {
    return false;
  }
  if (COALESCED.has(protocol)) return true;
  COALESCED.add(protocol);
  const p = protocol as OutboundProtocol;
  const flushNow = p.flushPending.bind(p);
  let scheduled = false;
  const flushScheduled = () => {
    scheduled = false;
    flushNow();
  };
  p.flushPending = () => {
    if (p.outbound.size() >= p.pendingLimit) flushNow();
    else if (!scheduled) {
      scheduled = true;
      setImmediate(flushScheduled);
    }
  };
  return true;
}

/**
 * Thrown instead of sending a request while the connection to NATS is down
 * (reconnecting): the client would otherwise buffer it until the server is
 * back or the request's timeout, and the caller would wait for nothing.
 */
export class NatsDisconnectedError extends UnavailableError {
  constructor() {
    super("NATS is disconnected (reconnecting)", { retryAfterMs: 1_000 });
  }
}

const connected = new WeakMap<NatsConnection, { up: boolean }>();

/**
 * Follows the connection's status events so isNatsConnected() answers from
 * memory. connectNats() does it for every connection it returns.
 */
export function trackConnection(nc: NatsConnection): void {
  if (connected.has(nc)) return;
  const state = { up: !nc.isClosed() };
  connected.set(nc, state);
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect" || s.type === "reconnecting" || s.type === "staleConnection")
        state.up = false;
      else if (s.type === "reconnect") state.up = true;
      else if (s.type === "close") state.up = false;
    }
  })().catch(() => {});
  void nc.closed().then(() => {
    state.up = false;
  });
}

/**
 * False while the client is disconnected or closed. Connections that were not
 * tracked (not from connectNats) count as connected unless closed.
 */
export function isNatsConnected(nc: NatsConnection): boolean {
  if (nc.isClosed()) return false;
  return connected.get(nc)?.up ?? true;
}

/** Throws NatsDisconnectedError (UNAVAILABLE) at once while NATS is away, rather than waiting for it. */
export function assertNatsConnected(nc: NatsConnection): void {
  if (!isNatsConnected(nc)) throw new NatsDisconnectedError();
}

/**
 * Adds the operation and the kit caller's async stack to an error from a NATS
 * request, in place (its type and message unchanged, so callers still
 * classify it), and returns it. With noAsyncTraces nats.js errors carry only
 * the client's internal frames; this restores "what was being done, from
 * where", at the cost of one stack capture per failure instead of two per
 * request.
 */
export function withNatsContext<E>(error: E, operation: string): E {
  if (error instanceof Error && !ANNOTATED.has(error)) {
    ANNOTATED.add(error);
    const site = new Error(operation).stack?.split("\n").slice(2).join("\n") ?? "";
    error.stack = `${error.stack ?? String(error)}\n    during NATS ${operation}\n${site}`;
  }
  return error;
}

const ANNOTATED = new WeakSet<Error>();

/** A connection URL with any password removed, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "<unparseable url>";
  }
}
