// Services are written as async functions that return a response or throw a
// SpoolError; this adapter turns them into grpc-js handlers so every thrown or
// rejected error is mapped exactly once (status.ts), and gives each call its
// context (request id, deadline, cancellation).
import type {
  deserialize as Deserialize,
  handleServerStreamingCall,
  handleUnaryCall,
  serialize as Serialize,
  ServerUnaryCall,
  ServerWritableStream,
  ServiceDefinition,
  UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { isSpoolError } from "../errors.js";
import type { Logger } from "../logger.js";
import { checkRequestText } from "../validation.js";
import { type CallContext, callInfoOf, deadlineMs, requestIdFrom } from "./context.js";
import { classifyError, toGrpcStatus } from "./status.js";

/** A unary method: resolves with the response or throws (SpoolError for an expected failure). */
export type UnaryMethod<Req, Res> = (request: Req, ctx: CallContext) => Promise<Res>;

export interface StreamContext<Res> extends CallContext {
  /** Sends one message, waiting while the client is slow; rejects once the call has ended. */
  send(message: Res): Promise<void>;
}

/** A server-streaming method: sends messages, then resolves to end the stream OK or throws. */
export type ServerStreamMethod<Req, Res> = (request: Req, ctx: StreamContext<Res>) => Promise<void>;

type RequestOf<M> = M extends { requestDeserialize: Deserialize<infer Req> } ? Req : never;
type ResponseOf<M> = M extends { responseSerialize: Serialize<infer Res> } ? Res : never;

/** The async implementation of a service definition (ts-proto's `XServiceService` or hand-written). */
export type AsyncService<D> = {
  [K in keyof D]: D[K] extends { requestStream: false; responseStream: false }
    ? UnaryMethod<RequestOf<D[K]>, ResponseOf<D[K]>>
    : D[K] extends { requestStream: false; responseStream: true }
      ? ServerStreamMethod<RequestOf<D[K]>, ResponseOf<D[K]>>
      : never;
};

/** The grpc-js handlers for a definition (what ts-proto calls `XServiceServer`). */
export type GrpcHandlers<D> = {
  [K in keyof D]: D[K] extends { requestStream: false; responseStream: false }
    ? handleUnaryCall<RequestOf<D[K]>, ResponseOf<D[K]>>
    : D[K] extends { requestStream: false; responseStream: true }
      ? handleServerStreamingCall<RequestOf<D[K]>, ResponseOf<D[K]>>
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
    } else {
      throw new Error(`${method.path}: client and bidi streaming are not supported by addService`);
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
    invoke(() => fn(call.request, ctx.context), call.request).then(
      (response) => {
        ctx.dispose();
        callback(null, response);
      },
      (error: unknown) => {
        ctx.dispose();
        callback(failure(error, ctx.context));
      },
    );
  };
}

function serverStream(
  path: string,
  fn: (request: unknown, ctx: StreamContext<unknown>) => Promise<void>,
  options: AdapterOptions,
): handleServerStreamingCall<unknown, unknown> {
  return (call: ServerWritableStream<unknown, unknown>) => {
    const ctx = createContext(call, path, options);
    const streamContext: StreamContext<unknown> = Object.assign(ctx.context, {
      send: (message: unknown) => send(call, ctx.context.signal, message),
    });
    invoke(() => fn(call.request, streamContext), call.request).then(
      () => {
        ctx.dispose();
        if (!call.cancelled) call.end();
      },
      (error: unknown) => {
        ctx.dispose();
        // grpc-js turns an emitted error into the stream's final status.
        if (!call.cancelled) call.emit("error", failure(error, ctx.context));
      },
    );
  };
}

/**
 * Runs the handler so a synchronous throw becomes a rejection like any other,
 * after the checks every request gets: no string field may hold NUL, other
 * control characters or bidi overrides (validation.ts), whatever the method.
 */
function invoke<T>(fn: () => Promise<T>, request: unknown): Promise<T> {
  try {
    checkRequestText(request);
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e);
  }
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

async function send(call: ServerWritableStream<unknown, unknown>, signal: AbortSignal, message: unknown) {
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

function createContext(
  call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>,
  method: string,
  options: AdapterOptions,
): LiveContext {
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
