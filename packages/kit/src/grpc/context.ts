import { randomUUID } from "node:crypto";
import type { Metadata } from "@grpc/grpc-js";
import type { Logger } from "../logger.js";

export const REQUEST_ID_KEY = "x-request-id";

/** What a handler knows about the call it serves. */
export interface CallContext {
  /** Full method path, e.g. "/spool.admin.v1.AdminService/GetProjection". */
  readonly method: string;
  /** The caller's x-request-id when acceptable, otherwise a generated one; echoed in response metadata. */
  readonly requestId: string;
  /** Incoming metadata (the auth interceptor reads credentials from it; never log it). */
  readonly metadata: Metadata;
  /** When the call must be answered: the earlier of the client's deadline and the server's limit (epoch ms). */
  readonly deadline: number;
  /** Milliseconds left before the deadline (0 once passed). */
  remainingMs(): number;
  /** Aborted when the call ends early: cancelled by the client, deadline passed, or server forced down. */
  readonly signal: AbortSignal;
  /**
   * Aborted when the server starts shutting down. Long-lived streams should
   * end (clients resume elsewhere) instead of holding up shutdown until the
   * grace period runs out.
   */
  readonly stopping: AbortSignal;
  /** A logger carrying the method and request id. */
  readonly logger: Logger;
  readonly peer: string;
}

/** What the interceptor learned about a call, handed to the handler adapter. */
export interface CallInfo {
  requestId: string;
  deadline: number;
}

/*
 * The interceptor passes the call's metadata object on to the handler
 * unchanged, so the object itself is the private key between the two: no
 * header a client could forge carries the server's view of the call.
 */
const callInfos = new WeakMap<Metadata, CallInfo>();

export function attachCallInfo(metadata: Metadata, info: CallInfo): void {
  callInfos.set(metadata, info);
}

export function callInfoOf(metadata: Metadata): CallInfo | undefined {
  return callInfos.get(metadata);
}

// Ids end up in logs and trailers: a bounded, boring alphabet only.
const ACCEPTABLE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The caller's request id when it is acceptable, otherwise a fresh one. */
export function requestIdFrom(metadata: Metadata): string {
  const given = metadata.get(REQUEST_ID_KEY)[0];
  return typeof given === "string" && ACCEPTABLE_REQUEST_ID.test(given) ? given : randomUUID();
}

/** grpc-js reports "no deadline" as Infinity and may hand back a Date. */
export function deadlineMs(deadline: Date | number): number {
  return deadline instanceof Date ? deadline.getTime() : deadline;
}
