// The contract between generation workers and model providers. Workers turn
// chunks into generation events; a ProviderError becomes a `failed` (or
// `cancelled`) terminal event with its reason.

export type ModelRole = "system" | "user" | "assistant" | "tool";

/** A tool call the model made in an earlier turn, as its assistant message carries it back. */
export interface ModelToolCall {
  id: string;
  name: string;
  argumentsJson: string;
}

export interface ModelMessage {
  role: ModelRole;
  /** May be empty on an assistant message that carries tool calls. */
  content: string;
  /** A "tool" message: the call whose result `content` is. */
  toolCallId?: string;
  /** An "assistant" message: the tool calls it made. */
  toolCalls?: ModelToolCall[];
}

/** A function the model may call. */
export interface ModelTool {
  name: string;
  description?: string;
  /** JSON Schema of the arguments (an object), already parsed; absent: no arguments. */
  parameters?: Record<string, unknown>;
}

export type ModelToolChoice = "auto" | "none" | "required" | { function: string };

export interface ModelParams {
  temperature?: number;
  maxTokens?: number;
  topP?: number;
}

export interface ModelRequest {
  /** A Spool model name; each provider maps it to its own. */
  model: string;
  messages: ModelMessage[];
  params: ModelParams;
  /** Functions the model may call; providers without tool support ignore them. */
  tools?: ModelTool[];
  /** Absent: the provider's default. */
  toolChoice?: ModelToolChoice;
  /** Aborting it stops the stream promptly with ProviderError reason "cancelled". */
  signal: AbortSignal;
}

export type ModelChunk =
  | { kind: "delta"; text: string }
  | { kind: "tool_call"; id: string; name: string; argumentsJson: string }
  | { kind: "usage"; promptTokens: number; completionTokens: number }
  | { kind: "finish"; reason: string };

export interface ModelProvider {
  /**
   * Streams one completion. `finish` is the last chunk of a successful stream;
   * anything else ends by throwing a ProviderError (or a kit SpoolError for bad
   * input, such as an unknown model, before any request is made).
   */
  stream(req: ModelRequest): AsyncIterable<ModelChunk>;
}

/**
 * - connect_timeout: no response headers in time.
 * - first_token_timeout: headers arrived, but no output in time.
 * - idle_timeout: output started, then the provider went quiet.
 * - http_error: the provider failed: an HTTP error status (`status` set), a
 *   broken connection (no `status`), or an error reported inside the stream.
 * - protocol_error: the response is not the protocol we speak (bad JSON, wrong
 *   content type, oversized event, stream ended without finishing).
 * - cancelled: the caller's signal aborted.
 */
export type ProviderErrorReason =
  | "connect_timeout"
  | "first_token_timeout"
  | "idle_timeout"
  | "http_error"
  | "protocol_error"
  | "cancelled";

export interface ProviderErrorOptions {
  /**
   * True when nothing had been yielded yet and the failure is transient, so
   * running the same request again could succeed without duplicating output.
   * A provider that retries internally still reports true once it gives up:
   * the worker may re-queue the generation later.
   */
  retryable: boolean;
  status?: number;
  /** The provider's requested wait (retry-after), when it sent one. */
  retryAfterMs?: number;
  cause?: unknown;
}

export class ProviderError extends Error {
  readonly reason: ProviderErrorReason;
  readonly retryable: boolean;
  readonly status?: number;
  readonly retryAfterMs?: number;

  constructor(reason: ProviderErrorReason, message: string, options: ProviderErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ProviderError";
    this.reason = reason;
    this.retryable = options.retryable;
    if (options.status !== undefined) this.status = options.status;
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
  }
}

export function cancelledError(): ProviderError {
  return new ProviderError("cancelled", "generation cancelled by caller", { retryable: false });
}
