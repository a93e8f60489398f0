// Services are written as async functions that return a response or throw a
// SpoolError; this adapter turns them into grpc-js handlers so every thrown or
// rejected error is mapped exactly once (status.ts), and gives each call its
// context (request id, deadline, cancellation). All four kinds of method get
// the same treatment; streamed requests are checked one by one as they are read.
import type {
  deserialize as Deserialize,
  handleBidiStreamingCall,
  handleClientStreamingCall,
  handleServerStreamingCall,
  handleUnaryCall,
  Metadata,
  serialize as Serialize,
  ServerDuplexStream,
  ServerReadableStream,
  ServerUnaryCall,
  ServerWritableStream,
  ServiceDefinition,
  UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { isSpoolError } from "../errors.js";
import type { Logger } from "../logger.js";
import { checkRequestText } from "../validation.js";
import { type CallContext, callInfoOf, deadlineMs, requestIdFrom } from "./context.js";
import { DirectFrameWriter, type GrpcFrame } from "./framed.js";
import { classifyError, toGrpcStatus } from "./status.js";

/** A unary method: resolves with the response or throws (SpoolError for an expected failure). */
export type UnaryMethod<Req, Res> = (request: Req, ctx: CallContext) => Promise<Res>;

export interface StreamContext<Res> extends CallContext {
  /** Sends one message, waiting while the client is slow; rejects once the call has ended. */
  send(message: Res): Promise<void>;
  /**
   * Sends one message now if the call takes it without waiting: true when it
   * was written, false (nothing written) when the call has ended or the
   * client is behind, where send() would wait. For a per-message path that
   * should not pay a promise per message; it falls back to send().
   */
  trySend(message: Res): boolean;
  /**
   * trySend for a message whose gRPC frame the caller already holds
   * (toGrpcFrame of exactly the bytes the method's responseSerialize gives
   * for it), typically one frame shared by many streams: when it is safe
   * (framed.ts) the frame goes straight onto the HTTP/2 stream, skipping
   * grpc-js's per-message copy and Writable layers; otherwise trySend(message).
   */
  trySendFramed(message: Res, frame: GrpcFrame): boolean;
}

/** A server-streaming method: sends messages, then resolves to end the stream OK or throws. */
export type ServerStreamMethod<Req, Res> = (request: Req, ctx: StreamContext<Res>) => Promise<void>;

/**
 * The client's messages, read as the handler asks for them (the client is
 * held back meanwhile: HTTP/2 flow control). Each message is checked like a
 * unary request (validation.ts) as it is read; a refused one, or the call
 * ending (cancelled, deadline, server forced down), makes the iteration throw.
 * It ends when the client half-closes. It can be iterated once.
 *
 * A Node client that cancels half-closes first (Node's HTTP/2 ends the stream
 * before resetting it), so the end can come just before the cancel: a handler
 * that must not act on a cut-short stream (an upload) checks it is complete
 * itself, e.g. against a size or digest announced in the first message.
 */
export type RequestStream<Req> = AsyncIterable<Req>;

/** A client-streaming method: reads the requests (all or as many as it needs), resolves with the response or throws. */
export type ClientStreamMethod<Req, Res> = (requests: RequestStream<Req>, ctx: CallContext) => Promise<Res>;

/**
 * A bidirectional method: reads requests and sends responses (ctx.send, which
 * waits while the client is slow) in any order; resolves to end the stream OK,
 * even before the client half-closed (its later messages are not read), or throws.
 */
export type BidiStreamMethod<Req, Res> = (
  requests: RequestStream<Req>,
  ctx: StreamContext<Res>,
) => Promise<void>;

/**
 * The first request (undefined when the client sent none) and the rest, for
 * streams whose first message differs (an upload's metadata, then its chunks).
 */
export async function firstAndRest<Req>(
  requests: RequestStream<Req>,
): Promise<{ first: Req | undefined; rest: RequestStream<Req> }> {
  const iterator = requests[Symbol.asyncIterator]();
  const head = await iterator.next();
  return { first: head.done ? undefined : head.value, rest: { [Symbol.asyncIterator]: () => iterator } };
}

type RequestOf<M> = M extends { requestDeserialize: Deserialize<infer Req> } ? Req : never;
type ResponseOf<M> = M extends { responseSerialize: Serialize<infer Res> } ? Res : never;

/** The async implementation of a service definition (ts-proto's `XServiceService` or hand-written). */
export type AsyncService<D> = {
  [K in keyof D]: D[K] extends { requestStream: false; responseStream: false }
    ? UnaryMethod<RequestOf<D[K]>, ResponseOf<D[K]>>
    : D[K] extends { requestStream: false; responseStream: true }
      ? ServerStreamMethod<RequestOf<D[K]>, ResponseOf<D[K]>>
      : D[K] extends { requestStream: true; responseStream: false }
        ? ClientStreamMethod<RequestOf<D[K]>, ResponseOf<D[K]>>
        : D[K] extends { requestStream: true; responseStream: true }
          ? BidiStreamMethod<RequestOf<D[K]>, ResponseOf<D[K]>>
          : never;
};

/** The grpc-js handlers for a definition (what ts-proto calls `XServiceServer`). */
export type GrpcHandlers<D> = {
  [K in keyof D]: D[K] extends { requestStream: false; responseStream: false }
    ? handleUnaryCall<RequestOf<D[K]>, ResponseOf<D[K]>>
    : D[K] extends { requestStream: false; responseStream: true }
      ? handleServerStreamingCall<RequestOf<D[K]>, ResponseOf<D[K]>>
      : D[K] extends { requestStream: true; responseStream: false }
        ? handleClientStreamingCall<RequestOf<D[K]>, ResponseOf<D[K]>>
        : D[K] extends { requestStream: true; responseStream: true }
          ? handleBidiStreamingCall<RequestOf<D[K]>, ResponseOf<D[K]>>
          : never;
};

export interface AdapterOptions {
  logger: Logger;
  /** Aborted when the server starts shutting down. */
  stopping?: AbortSignal;
}

/** Turns an async service implementation into grpc-js handlers. */
export function toGrpcHandlers<D extends ServiceDefinition>(
  definition: D,
  service: AsyncService<D>,
  options: AdapterOptions,
): GrpcHandlers<D> & UntypedServiceImplementation {
  const out: UntypedServiceImplementation = {};
  for (const [name, method] of Object.entries(definition)) {
    const fn = (service as Record<string, unknown>)[name];
    if (typeof fn !== "function") throw new Error(`${method.path} has no implementation`);
    // biome-ignore lint/suspicious/noExplicitAny: the mapped type checked it; the context type differs per kind
    const bound = fn.bind(service) as (request: unknown, ctx: any) => Promise<any>;
    if (!method.requestStream && !method.responseStream) {
      out[name] = unary(method.path, bound, options);
    } else if (!method.requestStream && method.responseStream) {
      out[name] = serverStream(method.path, bound, options);
    } else if (method.requestStream && !method.responseStream) {
      out[name] = clientStream(method.path, bound, options);
    } else {
      out[name] = bidiStream(method.path, bound, options);
    }
  }
  return out as GrpcHandlers<D> & UntypedServiceImplementation;
}

function unary(
  path: string,
  fn: (request: unknown, ctx: CallContext) => Promise<unknown>,
  options: AdapterOptions,
): handleUnaryCall<unknown, unknown> {
  return (call: ServerUnaryCall<unknown, unknown>, callback) => {
    const ctx = createContext(call, path, options);
    respond(
      invoke(() => fn(call.request, ctx.context), call.request),
      ctx,
      callback,
    );
  };
}

function clientStream(
  path: string,
  fn: (requests: RequestStream<unknown>, ctx: CallContext) => Promise<unknown>,
  options: AdapterOptions,
): handleClientStreamingCall<unknown, unknown> {
  return (call: ServerReadableStream<unknown, unknown>, callback) => {
    const ctx = createContext(call, path, options);
    respond(
      invoke(() => fn(requestStream(call, ctx.context.signal), ctx.context)),
      ctx,
      callback,
    );
  };
}

/** Answers a call with one response (unary, client streaming). */
function respond(
  outcome: Promise<unknown>,
  ctx: LiveContext,
  callback: (error: ReturnType<typeof failure> | null, response?: unknown) => void,
): void {
  outcome.then(
    (response) => {
      ctx.dispose();
      callback(null, response);
    },
    (error: unknown) => {
      ctx.dispose();
      callback(failure(error, ctx.context));
    },
  );
}

function serverStream(
  path: string,
  fn: (request: unknown, ctx: StreamContext<unknown>) => Promise<void>,
  options: AdapterOptions,
): handleServerStreamingCall<unknown, unknown> {
  return (call: ServerWritableStream<unknown, unknown>) => {
    const ctx = createContext(call, path, options);
    stream(call, ctx, (streamContext) => invoke(() => fn(call.request, streamContext), call.request));
  };
}

function bidiStream(
  path: string,
  fn: (requests: RequestStream<unknown>, ctx: StreamContext<unknown>) => Promise<void>,
  options: AdapterOptions,
): handleBidiStreamingCall<unknown, unknown> {
  return (call: ServerDuplexStream<unknown, unknown>) => {
    const ctx = createContext(call, path, options);
    stream(call, ctx, (streamContext) =>
      invoke(() => fn(requestStream(call, ctx.context.signal), streamContext)),
    );
  };
}

/** Runs a handler that sends its responses (server streaming, bidi), then ends the stream with its status. */
function stream(
  call: ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>,
  ctx: LiveContext,
  run: (streamContext: StreamContext<unknown>) => Promise<void>,
): void {
  let settled = false;
  // Found on the first framed send: most streams never send one.
  let frames: DirectFrameWriter | null | undefined;
  const trySend = (message: unknown) => {
    if (settled || call.cancelled || ctx.context.signal.aborted || call.writableNeedDrain) return false;
    call.write(message);
    return true;
  };
  const streamContext: StreamContext<unknown> = Object.assign(ctx.context, {
    // A send the handler did not wait for (a notice from a callback) must not write after the end.
    send: (message: unknown) =>
      settled ? Promise.reject(new CallEndedError()) : send(call, ctx.context.signal, message),
    trySend,
    trySendFramed: (message: unknown, frame: GrpcFrame) => {
      if (settled || ctx.context.signal.aborted) return false;
      if (frames === undefined) frames = DirectFrameWriter.for(call) ?? null;
      return frames?.tryWrite(frame) || trySend(message);
    },
  });
  run(streamContext).then(
    () => {
      settled = true;
      ctx.dispose();
      if (!call.cancelled) call.end();
    },
    (error: unknown) => {
      settled = true;
      ctx.dispose();
      // grpc-js turns an emitted error into the stream's final status.
      if (!call.cancelled) call.emit("error", failure(error, ctx.context));
    },
  );
}

/**
 * Runs the handler so a synchronous throw becomes a rejection like any other,
 * after the checks every request gets: no string field may hold NUL, other
 * control characters or bidi overrides (validation.ts), whatever the method.
 * Streamed requests get the same check as they are read (requestStream).
 */
function invoke<T>(fn: () => Promise<T>, request?: unknown): Promise<T> {
  try {
    if (request !== undefined) checkRequestText(request);
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e);
  }
}

/** The client's messages as a RequestStream: read on demand, checked one by one, ended with the call. */
function requestStream(
  call: ServerReadableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>,
  signal: AbortSignal,
): RequestStream<unknown> {
  let taken = false;
  return {
    [Symbol.asyncIterator]() {
      if (taken) throw new Error("a request stream can be read once");
      taken = true;
      return readRequests(call, signal);
    },
  };
}

async function* readRequests(
  call: ServerReadableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>,
  signal: AbortSignal,
): AsyncGenerator<unknown, void, undefined> {
  // Not destroyed when the handler stops reading early: a bidi call's responses still flow.
  const messages = call.iterator({ destroyOnReturn: false });
  try {
    while (true) {
      const next = await untilEnded(messages.next(), signal);
      if (next.done) return;
      checkRequestText(next.value);
      yield next.value;
    }
  } finally {
    void messages.return?.().catch(() => {});
  }
}

/**
 * The promise, or CallEndedError once the call has ended: grpc-js destroys a
 * cancelled call's stream (a "premature close"), and a read may never settle
 * when the server itself ended the call.
 */
function untilEnded<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const ended = () => reject(signal.reason);
    signal.addEventListener("abort", ended, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", ended);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", ended);
        reject(signal.aborted ? signal.reason : error);
      },
    );
  });
}

function failure(thrown: unknown, ctx: CallContext) {
  // A dependency's own error (NATS timeout, PostgreSQL connection) is logged and answered as UNAVAILABLE.
  const error = classifyError(thrown);
  if (ctx.signal.aborted) {
    // The caller is gone (cancelled, deadline, shutdown): nobody receives this status.
    ctx.logger.debug({ err: error }, "handler ended after its call");
  } else if (!isSpoolError(error) || error.code === "INTERNAL") {
    // The caller gets a generic message; the details stay in our log.
    ctx.logger.error({ err: error }, "unexpected error in gRPC handler");
  } else if (error.code === "UNAVAILABLE") {
    ctx.logger.warn({ err: error }, "dependency unavailable");
  }
  const { code, details, metadata } = toGrpcStatus(error, ctx.requestId);
  return { code, details, metadata };
}

async function send(
  call: ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>,
  signal: AbortSignal,
  message: unknown,
) {
  if (call.cancelled || signal.aborted) throw new CallEndedError();
  if (call.write(message)) return;
  await new Promise<void>((resolve, reject) => {
    const done = () => {
      call.off("drain", done);
      signal.removeEventListener("abort", ended);
      resolve();
    };
    const ended = () => {
      call.off("drain", done);
      reject(new CallEndedError());
    };
    call.on("drain", done);
    signal.addEventListener("abort", ended, { once: true });
  });
}

/** Thrown by `send` once the client is gone; handlers may let it propagate. */
export class CallEndedError extends Error {
  constructor() {
    super("the call has ended");
    this.name = "CallEndedError";
  }
}

interface LiveContext {
  context: CallContext;
  dispose(): void;
}

/** What every kind of call has (part of grpc-js's ServerSurfaceCall, which it does not export). */
interface SurfaceCall {
  readonly metadata: Metadata;
  getDeadline(): ReturnType<ServerUnaryCall<unknown, unknown>["getDeadline"]>;
  getPeer(): string;
  once(event: "cancelled", listener: () => void): unknown;
  off(event: "cancelled", listener: () => void): unknown;
}

function createContext(call: SurfaceCall, method: string, options: AdapterOptions): LiveContext {
  // Without the kit's interceptor (a bare grpc-js server) the call still gets a context.
  const info = callInfoOf(call.metadata) ?? {
    requestId: requestIdFrom(call.metadata),
    deadline: deadlineMs(call.getDeadline()),
  };
  const controller = new AbortController();
  const onCancelled = () => controller.abort(new CallEndedError());
  call.once("cancelled", onCancelled);
  // A pino child logger (with redaction) costs more than a cheap call itself: made on first use only.
  let logger: Logger | undefined;
  return {
    context: {
      method,
      requestId: info.requestId,
      metadata: call.metadata,
      deadline: info.deadline,
      remainingMs: () => Math.max(0, info.deadline - Date.now()),
      signal: controller.signal,
      stopping: options.stopping ?? new AbortController().signal,
      get logger() {
        logger ??= options.logger.child({ method, requestId: info.requestId });
        return logger;
      },
      peer: call.getPeer(),
    },
    dispose: () => call.off("cancelled", onCancelled),
  };
}
