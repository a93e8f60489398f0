// A local stand-in for an OpenAI-compatible provider: a real HTTP server
// speaking the real SSE protocol, scripted per request, recording what it got.

import { once } from "node:events";
import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

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
}

export interface FakeOpenAI {
  /** Base URL, without the /v1/chat/completions path. */
  url: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

export async function startFakeOpenAI(script: FakeScript): Promise<FakeOpenAI> {
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
      };
      const index = requests.push(recorded) - 1;
      res.on("close", () => {
        if (!res.writableFinished) recorded.disconnected = true;
      });
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
