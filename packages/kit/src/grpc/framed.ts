// Writing an already-framed gRPC message straight onto a call's HTTP/2
// stream. A message fanned out to many streams is encoded once by its
// producer; grpc-js would still, per stream, pass it through two Node
// Writables (the call's and the HTTP/2 stream's), the interceptor responder
// chain, and copy it into a fresh length-prefixed buffer. Here the frame
// (5-byte prefix + message) is built once and handed to each HTTP/2 stream
// as it is (docs/adr/0015-direct-grpc-frames.md).
//
// It reaches into grpc-js internals (1.14: ServerWritableStreamImpl.call, a
// chain of ServerInterceptingCall.nextCall ending at
// BaseServerInterceptingCall.stream). The shape is checked once per call; if
// it is not what this code knows (a grpc-js upgrade, an interceptor that
// rewrites messages), the call never takes the fast path and every message
// goes the normal way. framed.int.test.ts fails when that happens, so an
// upgrade cannot silently lose the fast path.
import type { ServerHttp2Stream } from "node:http2";
import { ServerInterceptingCall, type ServerInterceptingCallInterface } from "@grpc/grpc-js";

/** A serialized response with its gRPC length prefix (see toGrpcFrame). */
export type GrpcFrame = Buffer & { readonly __grpcFrame: true };

/** The gRPC frame of an encoded message: uncompressed flag, 4-byte big-endian length, the message. */
export function toGrpcFrame(message: Uint8Array): GrpcFrame {
  const frame = Buffer.allocUnsafe(message.byteLength + 5);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(message.byteLength, 1);
  frame.set(message, 5);
  return frame as GrpcFrame;
}

/** grpc-js's ServerInterceptingCall, as far as this module reads it. */
interface InterceptorLink {
  nextCall: ServerInterceptingCallInterface;
  responder: { sendMessage: unknown };
  sentMetadata: boolean;
  processingMetadata: boolean;
  processingMessage: boolean;
  pendingMessageCallback: unknown;
  pendingStatus: unknown;
}

/** grpc-js's BaseServerInterceptingCall, as far as this module reads it. */
interface BaseCall {
  stream: ServerHttp2Stream;
  metadataSent: boolean;
  cancelled: boolean;
  wantTrailers: boolean;
  maxSendMessageSize: number;
  callEventTracker: { addMessageSent(): void } | null;
  sendStatus(status: { code: number; details: string; metadata: null }): void;
}

/** The call object grpc-js hands a streaming handler (ServerWritableStreamImpl / ServerDuplexStreamImpl). */
interface WritableCall {
  readonly writableLength: number;
  readonly writableNeedDrain: boolean;
  readonly writableEnded: boolean;
  readonly writableCorked: number;
  readonly destroyed: boolean;
  readonly cancelled: boolean;
}

/** What ServerInterceptingCall does with a message when no interceptor rewrites it. */
const passThroughSendMessage = defaultSendMessage();

function defaultSendMessage(): unknown {
  try {
    const probe = new ServerInterceptingCall({} as ServerInterceptingCallInterface) as unknown as {
      responder?: { sendMessage?: unknown };
    };
    return probe.responder?.sendMessage;
  } catch {
    return undefined;
  }
}

/** grpc-js's INTERNAL status code (a write that failed), as grpc-js itself answers it. */
const INTERNAL = 13;

/**
 * Writes frames straight onto one call's HTTP/2 stream when that keeps every
 * promise of call.write(): response metadata already sent, nothing of the
 * call's still queued or in flight anywhere in grpc-js (so no frame overtakes
 * an earlier message), the call neither ended nor cancelled, the HTTP/2
 * stream not asking for drain, the frame within the call's max send size.
 * Anything else: tryWrite returns false and the caller uses the normal path.
 */
export class DirectFrameWriter {
  readonly #call: WritableCall;
  readonly #links: InterceptorLink[];
  readonly #base: BaseCall;
  readonly #stream: ServerHttp2Stream;
  readonly #written = (error?: Error | null) => {
    if (error) {
      // As grpc-js answers a failed write of its own.
      this.#base.sendStatus({ code: INTERNAL, details: "Internal server error", metadata: null });
      return;
    }
    this.#base.callEventTracker?.addMessageSent();
  };

  private constructor(call: WritableCall, links: InterceptorLink[], base: BaseCall) {
    this.#call = call;
    this.#links = links;
    this.#base = base;
    this.#stream = base.stream;
  }

  /** The writer for a streaming call, or undefined when grpc-js's shape is not the one known here. */
  static for(call: unknown): DirectFrameWriter | undefined {
    if (passThroughSendMessage === undefined || !isWritableCall(call)) return undefined;
    const links: InterceptorLink[] = [];
    let next: unknown = (call as { call?: unknown }).call;
    while (next instanceof ServerInterceptingCall) {
      const link: unknown = next;
      if (!isPassThroughLink(link)) return undefined;
      links.push(link);
      next = link.nextCall;
    }
    if (!isBaseCall(next)) return undefined;
    return new DirectFrameWriter(call, links, next);
  }

  /** Writes the frame now and returns true, or writes nothing and returns false (use the normal path). */
  tryWrite(frame: GrpcFrame): boolean {
    const call = this.#call;
    if (
      call.writableLength !== 0 ||
      call.writableNeedDrain ||
      call.writableEnded ||
      call.writableCorked !== 0 ||
      call.destroyed ||
      call.cancelled
    ) {
      return false;
    }
    for (const link of this.#links) {
      if (
        !link.sentMetadata ||
        link.processingMetadata ||
        link.processingMessage ||
        link.pendingMessageCallback !== null ||
        link.pendingStatus !== null
      ) {
        return false;
      }
    }
    const base = this.#base;
    const stream = this.#stream;
    if (
      !base.metadataSent ||
      base.cancelled ||
      base.wantTrailers ||
      stream.destroyed ||
      stream.closed ||
      stream.writableEnded ||
      stream.writableNeedDrain ||
      // The normal path answers RESOURCE_EXHAUSTED for it.
      (base.maxSendMessageSize !== -1 && frame.byteLength - 5 > base.maxSendMessageSize)
    ) {
      return false;
    }
    stream.write(frame, this.#written);
    return true;
  }
}

function isWritableCall(call: unknown): call is WritableCall {
  if (typeof call !== "object" || call === null) return false;
  const c = call as Record<string, unknown>;
  return (
    typeof c.writableLength === "number" &&
    typeof c.writableNeedDrain === "boolean" &&
    typeof c.writableEnded === "boolean" &&
    typeof c.writableCorked === "number" &&
    typeof c.destroyed === "boolean" &&
    typeof c.cancelled === "boolean" &&
    typeof c.call === "object" &&
    c.call !== null
  );
}

function isPassThroughLink(link: unknown): link is InterceptorLink {
  const l = link as Record<string, unknown>;
  const responder = l.responder as Record<string, unknown> | undefined;
  return (
    typeof responder === "object" &&
    responder !== null &&
    // An interceptor that rewrites messages must see every one of them.
    responder.sendMessage === passThroughSendMessage &&
    typeof l.sentMetadata === "boolean" &&
    typeof l.processingMetadata === "boolean" &&
    typeof l.processingMessage === "boolean" &&
    "pendingMessageCallback" in l &&
    "pendingStatus" in l &&
    typeof l.nextCall === "object" &&
    l.nextCall !== null
  );
}

function isBaseCall(call: unknown): call is BaseCall {
  if (typeof call !== "object" || call === null) return false;
  const c = call as Record<string, unknown>;
  const stream = c.stream as Record<string, unknown> | undefined;
  const tracker = c.callEventTracker as Record<string, unknown> | null | undefined;
  return (
    typeof stream === "object" &&
    stream !== null &&
    typeof stream.write === "function" &&
    typeof stream.respond === "function" &&
    typeof stream.writableNeedDrain === "boolean" &&
    typeof c.metadataSent === "boolean" &&
    typeof c.cancelled === "boolean" &&
    typeof c.wantTrailers === "boolean" &&
    typeof c.maxSendMessageSize === "number" &&
    typeof c.sendStatus === "function" &&
    (tracker === null || (typeof tracker === "object" && typeof tracker.addMessageSent === "function"))
  );
}
