import { connect, type NatsConnection } from "@nats-io/transport-node";
import { UnavailableError } from "./errors.js";

export interface NatsOptions {
  url: string;
  /** Shown in the server's connection list. */
  name: string;
}

/** Connects with reconnects forever: a NATS restart must not end the process. */
export async function connectNats(options: NatsOptions): Promise<NatsConnection> {
  try {
    return await connect({
      servers: options.url.split(",").map((s) => s.trim()),
      name: options.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      pingInterval: 10_000,
    });
  } catch (e) {
    throw new UnavailableError(`cannot connect to NATS at ${redactUrl(options.url)}`, { cause: e });
  }
}

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
