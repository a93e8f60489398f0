// Domain errors become gRPC statuses here, once, at the edge. The rich error
// details travel the standard way (google.rpc.Status in grpc-status-details-bin)
// so any gRPC client library can read them; retry-after-ms is a plain trailer
// for clients that do not decode details.
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Metadata, status as Status } from "@grpc/grpc-js";
import {
  ConcurrencyError,
  type ErrorCode,
  type FieldViolation,
  InvalidArgumentError,
  ResourceExhaustedError,
  SpoolError,
  UnavailableError,
} from "../errors.js";
import { isTransientError } from "../transient.js";
import { lengthDelimited, stringField } from "./wire.js";

export const STATUS_DETAILS_KEY = "grpc-status-details-bin";
export const RETRY_AFTER_KEY = "retry-after-ms";

const BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest";
const RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo";
/** Bounds what one error may put in trailers (HTTP/2 header lists are limited). */
const MAX_VIOLATIONS = 50;
const MAX_MESSAGE_CHARS = 1_000;

export interface GrpcStatus {
  code: Status;
  details: string;
  metadata: Metadata;
}

/**
 * Codes whose SpoolError message is written by infrastructure code (URLs,
 * hosts, subjects) rather than for the caller: the caller gets a fixed text.
 */
const GENERIC_MESSAGES: Partial<Record<ErrorCode, string>> = {
  UNAVAILABLE: "a dependency is unavailable, retry later",
  INTERNAL: "internal error",
  DEADLINE_EXCEEDED: "deadline exceeded",
};

/** What an UNAVAILABLE answer advises when its error does not say (a NATS reconnect takes about this long). */
export const DEFAULT_UNAVAILABLE_RETRY_MS = 1_000;

/**
 * A raw error of a dependency that is away (NATS timeout or disconnection,
 * PostgreSQL or Redis connection errors) as the UnavailableError it means;
 * anything else unchanged. Handlers need not catch and wrap them one by one.
 */
export function classifyError(error: unknown): unknown {
  if (error instanceof SpoolError || !isTransientError(error)) return error;
  return new UnavailableError("a dependency is unavailable", { cause: error });
}

/** Maps anything a handler threw to the status the caller sees. Never leaks an unexpected error's text. */
export function toGrpcStatus(thrown: unknown, requestId?: string): GrpcStatus {
  const metadata = new Metadata();
  const error = classifyError(thrown);
  if (!(error instanceof SpoolError)) {
    return { code: Status.INTERNAL, details: internalMessage(requestId), metadata };
  }
  const code = Status[error.code];
  const details = safeMessage(error, requestId);
  const attached: AnyMessage[] = [];
  if (error instanceof InvalidArgumentError) {
    const violations = error.violations.slice(0, MAX_VIOLATIONS);
    if (violations.length > 0) attached.push(badRequest(violations));
  }
  if (error instanceof ResourceExhaustedError || error instanceof UnavailableError) {
    // Transient: always say when to come back (UNAVAILABLE has a default, a limit knows its own).
    const retryAfterMs =
      error instanceof UnavailableError
        ? (error.retryAfterMs ?? DEFAULT_UNAVAILABLE_RETRY_MS)
        : error.retryAfterMs;
    if (typeof retryAfterMs === "number" && Number.isFinite(retryAfterMs) && retryAfterMs >= 0) {
      const ms = Math.ceil(retryAfterMs);
      metadata.set(RETRY_AFTER_KEY, String(ms));
      attached.push(retryInfo(ms));
    }
  }
  attached.push(...error.details);
  if (attached.length > 0) metadata.set(STATUS_DETAILS_KEY, encodeStatusDetails(code, details, attached));
  return { code, details, metadata };
}

function internalMessage(requestId: string | undefined): string {
  return requestId ? `internal error (request id ${requestId})` : "internal error";
}

function safeMessage(error: SpoolError, requestId: string | undefined): string {
  if (error.code === "INTERNAL") return internalMessage(requestId);
  const generic = GENERIC_MESSAGES[error.code];
  if (generic) return generic;
  // Its message names the stream subject and sequence: internal detail.
  if (error instanceof ConcurrencyError) return "the resource was modified concurrently; retry the request";
  return error.message.slice(0, MAX_MESSAGE_CHARS);
}

interface AnyMessage {
  typeUrl: string;
  value: Uint8Array;
}

function badRequest(violations: readonly FieldViolation[]): AnyMessage {
  const w = new BinaryWriter();
  for (const v of violations) {
    w.tag(1, WireType.LengthDelimited).fork();
    w.tag(1, WireType.LengthDelimited).string(v.field);
    w.tag(2, WireType.LengthDelimited).string(v.description);
    w.join();
  }
  return { typeUrl: BAD_REQUEST_TYPE, value: w.finish() };
}

function retryInfo(ms: number): AnyMessage {
  const w = new BinaryWriter();
  w.tag(1, WireType.LengthDelimited).fork();
  w.tag(1, WireType.Varint).int64(Math.floor(ms / 1000));
  w.tag(2, WireType.Varint).int32((ms % 1000) * 1_000_000);
  w.join();
  return { typeUrl: RETRY_INFO_TYPE, value: w.finish() };
}

/** google.rpc.Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; } */
function encodeStatusDetails(code: number, message: string, details: AnyMessage[]): Buffer {
  const w = new BinaryWriter();
  w.tag(1, WireType.Varint).int32(code);
  w.tag(2, WireType.LengthDelimited).string(message);
  for (const d of details) {
    w.tag(3, WireType.LengthDelimited).fork();
    w.tag(1, WireType.LengthDelimited).string(d.typeUrl);
    w.tag(2, WireType.LengthDelimited).bytes(d.value);
    w.join();
  }
  return Buffer.from(w.finish());
}

export interface ErrorDetails {
  violations: FieldViolation[];
  retryAfterMs: number | undefined;
  /** Every other detail, undecoded (decode by typeUrl with the message's own codec). */
  others: { typeUrl: string; value: Uint8Array }[];
}

/**
 * Reads the details a Spool server attached to an error's trailers (for the
 * CLI and tests): field violations and retry delay.
 */
export function readErrorDetails(metadata: Metadata | undefined): ErrorDetails {
  const out: ErrorDetails = { violations: [], retryAfterMs: undefined, others: [] };
  const raw = metadata?.get(STATUS_DETAILS_KEY)[0];
  if (raw instanceof Buffer) {
    for (const any of lengthDelimited(raw, 3)) {
      const typeUrl = stringField(any, 1);
      const [value] = lengthDelimited(any, 2);
      if (!value) continue;
      if (typeUrl === BAD_REQUEST_TYPE) {
        for (const v of lengthDelimited(value, 1)) {
          out.violations.push({ field: stringField(v, 1), description: stringField(v, 2) });
        }
      } else if (typeUrl === RETRY_INFO_TYPE) {
        const [duration] = lengthDelimited(value, 1);
        if (duration) out.retryAfterMs = durationMs(duration);
      } else {
        out.others.push({ typeUrl, value });
      }
    }
  }
  const header = metadata?.get(RETRY_AFTER_KEY)[0];
  if (out.retryAfterMs === undefined && typeof header === "string" && /^\d+$/.test(header)) {
    out.retryAfterMs = Number(header);
  }
  return out;
}

function durationMs(bytes: Uint8Array): number {
  const r = new BinaryReader(bytes);
  let seconds = 0;
  let nanos = 0;
  while (r.pos < r.len) {
    const [no, type] = r.tag();
    if (no === 1 && type === WireType.Varint) seconds = Number(r.int64());
    else if (no === 2 && type === WireType.Varint) nanos = r.int32();
    else r.skip(type, no);
  }
  return seconds * 1000 + Math.round(nanos / 1_000_000);
}
