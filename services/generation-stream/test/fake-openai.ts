// A local stand-in for an OpenAI-compatible provider: a real HTTP server
// speaking the real SSE protocol, scripted per request, recording what it got.

import { once } from "node:events";
import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { z } from "zod";

/** One thing the server does while streaming a response. */
export type SseStep =
  /** `data: <JSON>` followed by a blank line. */
  | { data: unknown }
  /** Written as is: `data: [DONE]\n\n`, comments, malformed or partial lines. */
  | { raw: string }
  /** Pause before the next step. */
  | { wait: number }
  /**
   * Tear the connection down (no proper end of the chunked body). As on a real
   * network, data written just before may be lost with it: put a wait first.
   */
  | { destroy: true }
  /** Stop sending but keep the connection open, until the client leaves or close(). */
  | { stall: true };

export type FakeReply =
  /** An SSE stream; `delayMs` is slept between steps. */
  | { sse: SseStep[]; delayMs?: number; headers?: Record<string, string> }
  /** A plain (error) response. */
  | { status: number; body?: string; headers?: Record<string, string> }
  /** Never send response headers. */
  | { hang: true };

/** The reply for every request, one per request in order (the last one repeats), or a function of it. */
export type FakeScript = FakeReply | FakeReply[] | ((request: RecordedRequest, index: number) => FakeReply);

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body (undefined if it was not JSON). */
  body: unknown;
  /** The client went away before the response was complete. */
  disconnected: boolean;
  /** Why the fake refused the body (400, as OpenAI would), when it did. */
  rejected?: string;
  /** When the request arrived (Date.now()). */
  atMs: number;
}

export interface FakeOpenAI {
  /** Base URL, without the /v1/chat/completions path. */
  url: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

/**
 * What OpenAI's chat-completions endpoint refuses with 400 before streaming
 * anything, for the parts Spool sends: the deprecated `max_tokens` (refused by
 * reasoning models; `max_completion_tokens` replaces it), malformed tools or
 * tool_choice, a tool_choice without tools or naming an unknown function, a
 * "tool" message without `tool_call_id` or answering no earlier assistant
 * tool call, and tool calls on anything but an assistant message.
 * Returns the error message, or undefined when the body is acceptable.
 */
export function chatRequestProblem(body: unknown): string | undefined {
  const parsed = ChatRequest.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return `Invalid request at ${issue?.path.join(".") ?? "?"}: ${issue?.message ?? "invalid"}`;
  }
  const req = parsed.data;
  if (req.max_tokens !== undefined)
    return "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.";
  const names = new Set((req.tools ?? []).map((t) => t.function.name));
  if (names.size !== (req.tools ?? []).length) return "tools: duplicate function names";
  if (req.tool_choice !== undefined) {
    if (!req.tools || req.tools.length === 0)
      return "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.";
    if (typeof req.tool_choice === "object" && !names.has(req.tool_choice.function.name))
      return `tool_choice names an unknown function '${req.tool_choice.function.name}'`;
  }
  const answerable = new Set<string>();
  for (const [i, m] of req.messages.entries()) {
    if (m.tool_calls !== undefined && m.role !== "assistant")
      return `messages[${i}]: only assistant messages carry tool_calls`;
    for (const call of m.tool_calls ?? []) answerable.add(call.id);
    if (m.role === "tool") {
      if (m.tool_call_id === undefined) return `messages[${i}]: 'tool_call_id' is required`;
      if (!answerable.has(m.tool_call_id))
        return `messages[${i}]: messages with role 'tool' must be a response to a preceding message with 'tool_calls'`;
    } else if (m.tool_call_id !== undefined) return `messages[${i}]: 'tool_call_id' only on tool messages`;
    if (m.content === null && !(m.role === "assistant" && m.tool_calls?.length))
      return `messages[${i}]: content is required`;
  }
  return undefined;
}

const FUNCTION_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const ChatRequest = z.object({
  model: z.string().min(1),
  stream: z.literal(true),
  messages: z
    .array(
      z.strictObject({
        role: z.enum(["system", "user", "assistant", "tool", "developer"]),
        content: z.string().nullable(),
        tool_call_id: z.string().min(1).optional(),
        tool_calls: z
          .array(
            z.strictObject({
              id: z.string().min(1),
              type: z.literal("function"),
              function: z.strictObject({ name: z.string().regex(FUNCTION_NAME), arguments: z.string() }),
            }),
          )
          .min(1)
          .optional(),
      }),
    )
    .min(1),
  max_tokens: z.number().int().optional(),
  max_completion_tokens: z.number().int().positive().optional(),
  tools: z
    .array(
      z.strictObject({
        type: z.literal("function"),
        function: z.strictObject({
          name: z.string().regex(FUNCTION_NAME),
          description: z.string().optional(),
          parameters: z.record(z.string(), z.unknown()).optional(),
        }),
      }),
    )
    .min(1)
    .optional(),
  tool_choice: z
    .union([
      z.enum(["auto", "none", "required"]),
      z.strictObject({ type: z.literal("function"), function: z.strictObject({ name: z.string() }) }),
    ])
    .optional(),
});

export interface FakeOptions {
  /** Answer a request OpenAI would refuse (chatRequestProblem) with its 400, before the script. Default true. */
  strict?: boolean;
}

export async function startFakeOpenAI(script: FakeScript, options: FakeOptions = {}): Promise<FakeOpenAI> {
  const strict = options.strict ?? true;
  const requests: RecordedRequest[] = [];
  const replyFor = (request: RecordedRequest, index: number): FakeReply => {
    if (typeof script === "function") return script(request, index);
    if (Array.isArray(script)) {
      const reply = script[Math.min(index, script.length - 1)];
      if (reply === undefined) throw new Error("fake-openai: empty script");
      return reply;
    }
    return script;
  };

  const server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on("data", (part: Buffer) => parts.push(part));
    req.on("end", () => {
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(parts).toString("utf8"));
      } catch {
        body = undefined;
      }
      const recorded: RecordedRequest = {
        method: req.method ?? "",
        path: req.url ?? "",
        headers: req.headers,
        body,
        disconnected: false,
        atMs: Date.now(),
      };
      const index = requests.push(recorded) - 1;
      res.on("close", () => {
        if (!res.writableFinished) recorded.disconnected = true;
      });
      const problem = strict ? chatRequestProblem(body) : undefined;
      if (problem !== undefined) {
        recorded.rejected = problem;
        const error = { message: problem, type: "invalid_request_error", param: null, code: null };
        void respond(res, { status: 400, body: JSON.stringify({ error }) });
        return;
      }
      void respond(res, replyFor(recorded, index));
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: async () => {
      // Stalled and hanging responses never end on their own.
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  };
}

async function respond(res: ServerResponse, reply: FakeReply): Promise<void> {
  if ("hang" in reply) return;
  if ("status" in reply) {
    res.writeHead(reply.status, { "content-type": "application/json", ...reply.headers });
    res.end(reply.body ?? JSON.stringify({ error: { message: `fake status ${reply.status}` } }));
    return;
  }
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", ...reply.headers });
  res.flushHeaders();
  for (const [i, step] of reply.sse.entries()) {
    if (i > 0 && reply.delayMs) await pause(reply.delayMs);
    if (res.destroyed) return; // the client left
    if ("wait" in step) await pause(step.wait);
    else if ("destroy" in step) {
      res.socket?.destroy();
      return;
    } else if ("stall" in step) return;
    else res.write("raw" in step ? step.raw : `data: ${JSON.stringify(step.data)}\n\n`);
  }
  res.end();
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// Builders for the chunks a real provider sends.

const chunk = (choice: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  id: "chatcmpl-fake",
  object: "chat.completion.chunk",
  created: 0,
  model: "fake-model",
  choices: [{ index: 0, finish_reason: null, ...choice }],
  usage: null,
  ...extra,
});

export const sse = {
  /** The opening chunk: role only, no content (not yet output). */
  role: (): SseStep => ({ data: chunk({ delta: { role: "assistant", content: "" } }) }),
  delta: (content: string): SseStep => ({ data: chunk({ delta: { content } }) }),
  toolCall: (index: number, fragment: { id?: string; name?: string; arguments?: string }): SseStep => ({
    data: chunk({
      delta: {
        content: null,
        tool_calls: [
          {
            index,
            ...(fragment.id === undefined ? {} : { id: fragment.id, type: "function" }),
            function: {
              ...(fragment.name === undefined ? {} : { name: fragment.name }),
              arguments: fragment.arguments ?? "",
            },
          },
        ],
      },
    }),
  }),
  finish: (reason = "stop"): SseStep => ({ data: chunk({ delta: {}, finish_reason: reason }) }),
  usage: (prompt: number, completion: number): SseStep => ({
    data: {
      ...chunk({}),
      choices: [],
      usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
    },
  }),
  done: (): SseStep => ({ raw: "data: [DONE]\n\n" }),
  error: (message: string): SseStep => ({ data: { error: { message, type: "server_error" } } }),
};

/** A complete, well-formed completion: role, the deltas, finish, usage, [DONE]. */
export function textStream(deltas: string[], usage = { prompt: 7, completion: deltas.length }): SseStep[] {
  return [
    sse.role(),
    ...deltas.map(sse.delta),
    sse.finish(),
    sse.usage(usage.prompt, usage.completion),
    sse.done(),
  ];
}
