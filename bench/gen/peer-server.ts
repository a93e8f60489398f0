// The peer, served the way resumable-stream's README serves it, in a Node
// process of its own: an HTTP server-sent-events endpoint on one
// createResumableStreamContext (the package's default node-redis clients,
// from REDIS_URL).
//
//   POST /streams/<id>?rate=R&length=L   createNewResumableStream(id, makeStream):
//                                          the producer, answered with its stream
//   GET  /streams/<id>                   resumeExistingStream(id): a follower
//
// makeStream is a token source like the built-in model: L tokens, token i due
// at start + i/R s (the first at once), each one SSE event
// `data: <i> <Date.now() when the library took it> <word>`, i = 1…L. The
// source is pulled (highWaterMark 0), so the timestamp is the moment the
// library reads the chunk to append it — the equivalent of Spool's producer
// append time.
//
// Prints `<PEER_READY_PREFIX> {"port":N}` once listening and
// `<PEER_STATS_PREFIX> <stats>` on SIGUSR2.
import http from "node:http";
import { createResumableStreamContext } from "resumable-stream";
import { errorText, PEER_READY_PREFIX, PEER_STATS_PREFIX, type PeerStats, WORDS } from "./shared.js";

const keyPrefix = process.env.SPOOL_BENCH_GEN_PEER_PREFIX ?? "spool-bench-peer";
const ctx = createResumableStreamContext({ waitUntil: null, keyPrefix });

const stats: PeerStats = {
  producers: 0,
  resumes: 0,
  resumeDone: 0,
  resumeMissing: 0,
  errors: 0,
  unhandled: 0,
  errorSamples: [],
};
const note = (e: unknown) => {
  if (stats.errorSamples.length < 5) stats.errorSamples.push(errorText(e));
};
// A rejection the library leaves unhandled (e.g. a resume's ack timeout) is counted, not fatal.
process.on("unhandledRejection", (e) => {
  stats.unhandled++;
  note(e);
});

function tokenStream(rate: number, length: number): ReadableStream<string> {
  const intervalMs = rate > 0 ? 1000 / rate : 0;
  const start = performance.now();
  let i = 0;
  return new ReadableStream<string>(
    {
      async pull(controller) {
        const wait = start + i * intervalMs - performance.now();
        if (wait >= 1) await new Promise((r) => setTimeout(r, wait));
        i++;
        controller.enqueue(`data: ${i} ${Date.now()} ${WORDS[i % WORDS.length]}\n\n`);
        if (i >= length) controller.close();
      },
    },
    { highWaterMark: 0 },
  );
}

async function send(res: http.ServerResponse, stream: ReadableStream<string>): Promise<void> {
  res.writeHead(200, {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    connection: "keep-alive",
  });
  res.flushHeaders();
  const reader = stream.getReader();
  let closed = false;
  res.on("close", () => {
    if (!res.writableFinished) {
      closed = true;
      reader.cancel().catch(() => {});
    }
  });
  for (;;) {
    const { done, value } = await reader.read();
    if (done || closed) break;
    if (value.length > 0 && !res.write(value)) {
      await new Promise<void>((r) => res.once("drain", r));
    }
  }
  res.end();
}

const server = http.createServer({ noDelay: true, keepAliveTimeout: 120_000 }, (req, res) => {
  const url = new URL(req.url ?? "/", "http://peer");
  const id = /^\/streams\/([\w-]{1,128})$/.exec(url.pathname)?.[1];
  if (!id) {
    res.writeHead(404).end();
    return;
  }
  void (async () => {
    try {
      if (req.method === "POST") {
        const rate = Number(url.searchParams.get("rate") ?? "50");
        const length = Number(url.searchParams.get("length") ?? "200");
        const stream = await ctx.createNewResumableStream(id, () => tokenStream(rate, length));
        if (!stream) {
          res.writeHead(409).end("stream exists");
          return;
        }
        stats.producers++;
        await send(res, stream);
      } else if (req.method === "GET") {
        const stream = await ctx.resumeExistingStream(id);
        if (stream === null) {
          stats.resumeDone++;
          res.writeHead(422).end("Stream is already done");
          return;
        }
        if (stream === undefined) {
          stats.resumeMissing++;
          res.writeHead(404).end("no such stream");
          return;
        }
        stats.resumes++;
        await send(res, stream);
      } else {
        res.writeHead(405).end();
      }
    } catch (e) {
      stats.errors++;
      note(e);
      if (!res.headersSent) res.writeHead(500).end(errorText(e));
      else res.destroy();
    }
  })();
});
server.maxConnections = 100_000;

server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  process.stdout.write(`${PEER_READY_PREFIX} ${JSON.stringify({ port })}\n`);
});

process.on("SIGUSR2", () => {
  process.stdout.write(`${PEER_STATS_PREFIX} ${JSON.stringify(stats)}\n`);
});
process.on("SIGTERM", () => {
  process.stdout.write(`${PEER_STATS_PREFIX} ${JSON.stringify(stats)}\n`);
  server.closeAllConnections();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2_000).unref();
});
