// One server interceptor for every call the server handles, including the
// health and reflection services the kit does not write: request ids,
// deadlines, refusal while shutting down, one log line and the metrics.
// Errors thrown by our handlers are mapped earlier, in the handler adapter
// (handlers.ts), because an interceptor never sees a handler's exception.
import {
  Metadata,
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  status as Status,
} from "@grpc/grpc-js";
import { Gauge, Histogram, type Registry } from "prom-client";
import type { Logger } from "../logger.js";
import { attachCallInfo, deadlineMs, REQUEST_ID_KEY, requestIdFrom } from "./context.js";

type PartialStatus = Parameters<ServerInterceptingCallInterface["sendStatus"]>[0];

export interface GrpcMetrics {
  duration: Histogram<"method" | "code">;
  inFlight: Gauge<"method">;
}

/** gRPC server metrics on a registry; reused when the registry already has them. */
export function grpcMetrics(registry: Registry): GrpcMetrics {
  const durationName = "spool_grpc_server_handling_seconds";
  const inFlightName = "spool_grpc_server_in_flight_calls";
  const duration =
    (registry.getSingleMetric(durationName) as Histogram<"method" | "code"> | undefined) ??
    new Histogram({
      name: durationName,
      help: "Duration of gRPC calls by method and final status code.",
      labelNames: ["method", "code"] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120],
      registers: [registry],
    });
  const inFlight =
    (registry.getSingleMetric(inFlightName) as Gauge<"method"> | undefined) ??
    new Gauge({
      name: inFlightName,
      help: "gRPC calls being handled now.",
      labelNames: ["method"] as const,
      registers: [registry],
    });
  return { duration, inFlight };
}

export interface InterceptorOptions {
  logger: Logger;
  metrics: GrpcMetrics | undefined;
  /** True once shutdown began: new calls are refused with UNAVAILABLE. */
  draining: () => boolean;
  /** Longest a unary call may run, whatever deadline the client set (or none). */
  maxUnaryMs: number;
  /** Same for streaming calls; Infinity lets follow-style streams live until the client leaves. */
  maxStreamMs: number;
  /** Methods logged at debug level (health probes would drown the log). */
  quietMethods: ReadonlySet<string>;
  /** Largest request metadata (HTTP/2 header list size) accepted; larger calls get RESOURCE_EXHAUSTED. */
  maxMetadataBytes: number;
}

export function serverInterceptor(options: InterceptorOptions): ServerInterceptor {
  return (descriptor, call) => {
    const streaming = descriptor.requestStream || descriptor.responseStream;
    return new TrackedCall(
      call,
      descriptor.path,
      streaming ? options.maxStreamMs : options.maxUnaryMs,
      options,
    ).intercepting;
  };
}

class TrackedCall {
  readonly intercepting: ServerInterceptingCall;
  readonly #call: ServerInterceptingCallInterface;
  readonly #method: string;
  readonly #limitMs: number;
  readonly #o: InterceptorOptions;
  readonly #started = performance.now();
  #requestId = "";
  #deadline = Number.POSITIVE_INFINITY;
  #metadataSent = false;
  #finished = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(call: ServerInterceptingCallInterface, method: string, limitMs: number, o: InterceptorOptions) {
    this.#call = call;
    this.#method = method;
    this.#limitMs = limitMs;
    this.#o = o;
    o.metrics?.inFlight.inc({ method });
    this.intercepting = new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, nextMetadata) => this.#onMetadata(metadata, nextMetadata),
          // A status we sent ends the call too; this one covers the client
          // leaving, and statuses grpc-js sends on its own (its deadline
          // timer, oversized messages), which bypass interceptors.
          onCancel: () => this.#finish(this.#deadlinePassed() ? Status.DEADLINE_EXCEEDED : Status.CANCELLED),
        }),
      sendMetadata: (metadata, next) => {
        this.#metadataSent = true;
        metadata.set(REQUEST_ID_KEY, this.#requestId);
        next(metadata);
      },
      sendStatus: (status, next) => next(this.#onStatus(status)),
    });
  }

  #onMetadata(metadata: Metadata, next: (metadata: Metadata) => void): void {
    this.#requestId = requestIdFrom(metadata);
    metadata.set(REQUEST_ID_KEY, this.#requestId);
    if (this.#o.draining()) {
      this.#refuse(Status.UNAVAILABLE, "server is shutting down");
      return;
    }
    const size = metadataBytes(metadata);
    if (size > this.#o.maxMetadataBytes) {
      // This call alone: the stream gets its status, the connection and its other calls go on.
      this.#refuse(
        Status.RESOURCE_EXHAUSTED,
        `request metadata is ${size} bytes; the limit is ${this.#o.maxMetadataBytes}`,
      );
      return;
    }
    const now = Date.now();
    const clientDeadline = deadlineMs(this.#call.getDeadline());
    if (clientDeadline <= now) {
      this.#refuse(Status.DEADLINE_EXCEEDED, "deadline exceeded before the call started");
      return;
    }
    this.#deadline = Math.min(clientDeadline, now + this.#limitMs);
    // grpc-js enforces the client's deadline itself; only our tighter limit needs a timer.
    if (this.#deadline < clientDeadline) {
      this.#timer = setTimeout(
        () => this.intercepting.sendStatus({ code: Status.DEADLINE_EXCEEDED, details: "call took too long" }),
        this.#deadline - now,
      );
    }
    attachCallInfo(metadata, { requestId: this.#requestId, deadline: this.#deadline });
    next(metadata);
  }

  #refuse(code: Status, details: string): void {
    this.intercepting.sendStatus({ code, details });
  }

  #onStatus(status: PartialStatus): PartialStatus {
    this.#finish(status.code, status.details);
    if (this.#metadataSent) return status;
    // A trailers-only response: the request id goes with the status.
    const metadata = status.metadata?.clone() ?? new Metadata();
    metadata.set(REQUEST_ID_KEY, this.#requestId);
    return { ...status, metadata };
  }

  #deadlinePassed(): boolean {
    return Date.now() >= Math.min(this.#deadline, deadlineMs(this.#call.getDeadline()));
  }

  #finish(code: Status, details?: string): void {
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#timer);
    const seconds = (performance.now() - this.#started) / 1000;
    const codeName = Status[code] ?? String(code);
    this.#o.metrics?.inFlight.dec({ method: this.#method });
    this.#o.metrics?.duration.observe({ method: this.#method, code: codeName }, seconds);
    const line = {
      method: this.#method,
      code: codeName,
      durationMs: Math.round(seconds * 10_000) / 10,
      requestId: this.#requestId || undefined,
      peer: this.#call.getPeer(),
      ...(code !== Status.OK && details ? { details } : {}),
    };
    this.#o.logger[levelFor(code, this.#o.quietMethods.has(this.#method))](line, "grpc call");
  }
}

/**
 * The metadata's size as HTTP/2 counts a header list (RFC 9113 §6.5.2): each
 * name and value in octets plus 32. Binary values count as sent, in base64.
 */
export function metadataBytes(metadata: Metadata): number {
  let total = 0;
  for (const [name, value] of Object.entries(metadata.toHttp2Headers())) {
    for (const v of Array.isArray(value) ? value : [value]) {
      total += Buffer.byteLength(name) + Buffer.byteLength(String(v)) + 32;
    }
  }
  return total;
}

function levelFor(code: Status, quiet: boolean): "debug" | "info" | "warn" | "error" {
  if (code === Status.INTERNAL || code === Status.UNKNOWN || code === Status.DATA_LOSS) return "error";
  if (quiet) return "debug";
  if (code === Status.UNAVAILABLE || code === Status.DEADLINE_EXCEEDED) return "warn";
  return "info";
}
