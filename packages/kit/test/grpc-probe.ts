// A tiny hand-written gRPC service (JSON messages) for the server kit's tests,
// and promise-based client helpers.
import {
  type Client,
  credentials,
  Metadata,
  type MethodDefinition,
  makeGenericClientConstructor,
  type ServiceError,
  type StatusObject,
} from "@grpc/grpc-js";
import {
  AlreadyExistsError,
  ConcurrencyError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  ResourceExhaustedError,
  SpoolError,
  UnauthenticatedError,
  UnavailableError,
} from "../src/errors.js";
import type { CallContext } from "../src/grpc/context.js";
import type { AsyncService, StreamContext } from "../src/grpc/handlers.js";

export type FailureKind =
  | "invalid"
  | "unauthenticated"
  | "permission"
  | "notfound"
  | "exists"
  | "precondition"
  | "concurrency"
  | "exhausted"
  | "unavailable"
  | "internal"
  | "unexpected"
  | "thrown-string"
  | "sync";

export interface EchoRequest {
  text?: string;
  delayMs?: number;
  fail?: FailureKind;
  /** Response text repeated this many times (send-limit tests). */
  repeat?: number;
}

export interface EchoResponse {
  text: string;
  requestId: string;
  remainingMs: number;
}

export interface CountRequest {
  n: number;
  failAfter?: number;
  /** Between messages. */
  delayMs?: number;
  /** Send with ctx.trySend, falling back to ctx.send when it refuses (counted in the record). */
  trySend?: boolean;
}

export interface CountResponse {
  i: number;
}

function json<T>() {
  return {
    serialize: (value: T): Buffer => Buffer.from(JSON.stringify(value)),
    deserialize: (bytes: Buffer): T => JSON.parse(bytes.toString("utf8")) as T,
  };
}

function method<Req, Res, S extends boolean>(path: string, responseStream: S) {
  const req = json<Req>();
  const res = json<Res>();
  return {
    path,
    requestStream: false as const,
    responseStream,
    requestSerialize: req.serialize,
    requestDeserialize: req.deserialize,
    responseSerialize: res.serialize,
    responseDeserialize: res.deserialize,
  };
}

export const ProbeService = {
  echo: method<EchoRequest, EchoResponse, false>("/spool.test.v1.Probe/Echo", false),
  count: method<CountRequest, CountResponse, true>("/spool.test.v1.Probe/Count", true),
};

/** What the probe's handlers observed, for assertions. */
export interface ProbeRecord {
  started: string[];
  aborted: string[];
  completed: string[];
  /** Count with trySend: messages trySend wrote, and the ones it refused (sent with send instead). */
  trySends: { written: number; refused: number };
}

export const SECRET_TEXT = "password=hunter2 at /srv/spool/app/db.ts:42";

export function failure(kind: FailureKind): unknown {
  switch (kind) {
    case "invalid":
      return new InvalidArgumentError("text is not acceptable", [
        { field: "text", description: "must not be empty" },
        { field: "delay_ms", description: "must be positive" },
      ]);
    case "unauthenticated":
      return new UnauthenticatedError();
    case "permission":
      return new PermissionDeniedError("not allowed to echo");
    case "notfound":
      return new NotFoundError("echo 42 not found");
    case "exists":
      return new AlreadyExistsError("echo 42 already exists");
    case "precondition":
      return new FailedPreconditionError("echo is closed");
    case "concurrency":
      return new ConcurrencyError("prefix_auth.user.42", 7);
    case "exhausted":
      return new ResourceExhaustedError("too many echoes", 1500);
    case "unavailable":
      return new UnavailableError("cannot connect to postgres at db.internal:5432");
    case "internal":
      return new SpoolError("INTERNAL", `invariant broken: ${SECRET_TEXT}`);
    case "unexpected":
      return new Error(`connection failed: ${SECRET_TEXT}`);
    case "thrown-string":
      return SECRET_TEXT;
    case "sync":
      return new NotFoundError("thrown synchronously");
  }
}

export function probeService(record: ProbeRecord): AsyncService<typeof ProbeService> {
  return {
    echo(request: EchoRequest, ctx: CallContext): Promise<EchoResponse> {
      // Not async on purpose: a synchronous throw must be mapped too.
      if (request.fail === "sync") throw failure("sync");
      return echo(request, ctx, record);
    },
    async count(request: CountRequest, ctx: StreamContext<CountResponse>): Promise<void> {
      for (let i = 0; i < request.n; i++) {
        if (request.failAfter !== undefined && i === request.failAfter) throw new NotFoundError("no more");
        if (request.delayMs) await sleep(request.delayMs, ctx.signal);
        if (request.trySend) {
          if (ctx.trySend({ i })) {
            record.trySends.written++;
            continue;
          }
          record.trySends.refused++;
        }
        await ctx.send({ i });
      }
    },
  };
}

async function echo(request: EchoRequest, ctx: CallContext, record: ProbeRecord): Promise<EchoResponse> {
  record.started.push(ctx.requestId);
  if (request.delayMs) {
    try {
      await sleep(request.delayMs, ctx.signal);
    } catch (e) {
      record.aborted.push(ctx.requestId);
      throw e;
    }
  }
  if (request.fail) throw failure(request.fail);
  record.completed.push(ctx.requestId);
  return {
    text: (request.text ?? "").repeat(request.repeat ?? 1),
    requestId: ctx.requestId,
    remainingMs: ctx.remainingMs(),
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

export function newRecord(): ProbeRecord {
  return { started: [], aborted: [], completed: [], trySends: { written: 0, refused: 0 } };
}

const ProbeClient = makeGenericClientConstructor({}, "Probe");

/** A plain client for any method definition on the address. */
export function clientFor(address: string): Client {
  return new ProbeClient(address, credentials.createInsecure());
}

export interface UnaryResult<Res> {
  response: Res;
  headers: Metadata;
  status: StatusObject;
}

export interface CallOptionsLite {
  metadata?: Metadata;
  /** Relative deadline. */
  timeoutMs?: number;
}

/** One unary call; rejects with the ServiceError (code, details, metadata = trailers). */
export function unaryCall<Req, Res>(
  client: Client,
  def: Pick<MethodDefinition<Req, Res>, "path" | "requestSerialize" | "responseDeserialize">,
  request: Req,
  options: CallOptionsLite = {},
): Promise<UnaryResult<Res>> {
  return new Promise((resolve, reject) => {
    let headers = new Metadata();
    let outcome: { error: ServiceError } | { response: Res } | undefined;
    const call = client.makeUnaryRequest(
      def.path,
      def.requestSerialize,
      def.responseDeserialize,
      request,
      options.metadata ?? new Metadata(),
      options.timeoutMs !== undefined ? { deadline: Date.now() + options.timeoutMs } : {},
      (error, response) => {
        outcome = error ? { error } : { response: response as Res };
      },
    );
    call.on("metadata", (md: Metadata) => {
      headers = md;
    });
    call.on("status", (status: StatusObject) => {
      if (!outcome) return reject(new Error("status without outcome"));
      if ("error" in outcome) reject(outcome.error);
      else resolve({ response: outcome.response, headers, status });
    });
  });
}

/** The rejection of a call that was expected to fail. */
export async function callError(promise: Promise<unknown>): Promise<ServiceError> {
  try {
    await promise;
  } catch (e) {
    return e as ServiceError;
  }
  throw new Error("the call succeeded but was expected to fail");
}

/** A server-streaming call: every message, then the final status (or the error). */
export function streamCall<Req, Res>(
  client: Client,
  def: Pick<MethodDefinition<Req, Res>, "path" | "requestSerialize" | "responseDeserialize">,
  request: Req,
): Promise<{ messages: Res[]; error: ServiceError | undefined }> {
  return new Promise((resolve) => {
    const messages: Res[] = [];
    let error: ServiceError | undefined;
    const call = client.makeServerStreamRequest(
      def.path,
      def.requestSerialize,
      def.responseDeserialize,
      request,
      new Metadata(),
      {},
    );
    call.on("data", (m: Res) => messages.push(m));
    call.on("error", (e: ServiceError) => {
      error = e;
    });
    call.on("status", () => resolve({ messages, error }));
  });
}

// Client- and bidi-streaming probes (streaming.int.test.ts).

export interface PartRequest {
  n?: number;
  text?: string;
  fail?: FailureKind;
  /** Before handling this message. */
  delayMs?: number;
  /** Bidi: end the call OK without reading further. */
  stop?: boolean;
}

export interface SumResponse {
  total: number;
  count: number;
  requestId: string;
}

export interface ChatResponse {
  text: string;
  i: number;
}

function streamingMethod<Req, Res, S extends boolean>(path: string, responseStream: S) {
  return { ...method<Req, Res, S>(path, responseStream), requestStream: true as const };
}

export const StreamProbeService = {
  sum: streamingMethod<PartRequest, SumResponse, false>("/spool.test.v1.StreamProbe/Sum", false),
  chat: streamingMethod<PartRequest, ChatResponse, true>("/spool.test.v1.StreamProbe/Chat", true),
};

/** Handles one streamed message as the probes do: wait, fail on demand. */
async function part(request: PartRequest, ctx: CallContext): Promise<void> {
  if (request.delayMs) await sleep(request.delayMs, ctx.signal);
  if (request.fail) throw failure(request.fail);
}

/** Records the call as aborted when it failed because the call ended. */
async function tracked<T>(ctx: CallContext, record: ProbeRecord, run: () => Promise<T>): Promise<T> {
  record.started.push(ctx.requestId);
  try {
    const result = await run();
    record.completed.push(ctx.requestId);
    return result;
  } catch (e) {
    if (ctx.signal.aborted) record.aborted.push(ctx.requestId);
    throw e;
  }
}

export function streamProbeService(record: ProbeRecord): AsyncService<typeof StreamProbeService> {
  return {
    sum: (requests, ctx) =>
      tracked(ctx, record, async () => {
        let total = 0;
        let count = 0;
        for await (const request of requests) {
          await part(request, ctx);
          total += request.n ?? 0;
          count++;
        }
        return { total, count, requestId: ctx.requestId };
      }),
    chat: (requests, ctx) =>
      tracked(ctx, record, async () => {
        let i = 0;
        for await (const request of requests) {
          if (request.stop) return;
          await part(request, ctx);
          await ctx.send({ text: request.text ?? "", i: i++ });
        }
      }),
  };
}

export interface ClientStreamResult<Res> {
  response: Res | undefined;
  error: ServiceError | undefined;
  headers: Metadata;
}

/** A client-streaming call: writes the requests (half-closing unless `keepOpen`), then the outcome. */
export function clientStreamCall<Req, Res>(
  client: Client,
  def: Pick<MethodDefinition<Req, Res>, "path" | "requestSerialize" | "responseDeserialize">,
  requests: Req[],
  options: CallOptionsLite & { keepOpen?: boolean } = {},
): Promise<ClientStreamResult<Res>> {
  return new Promise((resolve) => {
    let headers = new Metadata();
    let outcome: { error: ServiceError | undefined; response: Res | undefined } | undefined;
    const call = client.makeClientStreamRequest(
      def.path,
      def.requestSerialize,
      def.responseDeserialize,
      options.metadata ?? new Metadata(),
      options.timeoutMs !== undefined ? { deadline: Date.now() + options.timeoutMs } : {},
      (error, response) => {
        outcome = { error: error ?? undefined, response: error ? undefined : (response as Res) };
      },
    );
    call.on("metadata", (md: Metadata) => {
      headers = md;
    });
    call.on("status", () => resolve({ ...(outcome ?? { error: undefined, response: undefined }), headers }));
    for (const r of requests) call.write(r);
    if (!options.keepOpen) call.end();
  });
}

/** A bidi call driven by the test: write, read what came back, cancel, await the end. */
export function bidiCall<Req, Res>(
  client: Client,
  def: Pick<MethodDefinition<Req, Res>, "path" | "requestSerialize" | "responseDeserialize">,
  options: CallOptionsLite = {},
) {
  const call = client.makeBidiStreamRequest(
    def.path,
    def.requestSerialize,
    def.responseDeserialize,
    options.metadata ?? new Metadata(),
    options.timeoutMs !== undefined ? { deadline: Date.now() + options.timeoutMs } : {},
  );
  const messages: Res[] = [];
  let error: ServiceError | undefined;
  call.on("data", (m: Res) => messages.push(m));
  call.on("error", (e: ServiceError) => {
    error = e;
  });
  const done = new Promise<{ messages: Res[]; error: ServiceError | undefined }>((resolve) =>
    call.on("status", () => resolve({ messages, error })),
  );
  return {
    messages,
    done,
    write: (m: Req) => call.write(m),
    end: () => call.end(),
    cancel: () => call.cancel(),
    /** Stops reading responses (backpressure tests). */
    pause: () => call.pause(),
  };
}
