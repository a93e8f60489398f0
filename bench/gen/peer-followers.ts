// The peer's clients, a process of their own: for each of G streams, the POST
// that creates it (its response is the producer's own stream: follower 1),
// then F − 1 GETs that resume it through Redis (followers 2…F), all HTTP/1.1
// server-sent events over node:http, one connection per follower as browsers
// hold them. Counts every event, checks each stream's sequence (1…L, no gap,
// no duplicate, then the response ends), and records the delay from the
// timestamp the peer embedded in the chunk to receipt. Reads its plan from
// SPOOL_BENCH_GEN_PLAN, prints one result line.
import http from "node:http";
import { type Driver, driveThroughput, type Sink } from "./drive.js";
import { printResult, readPlan, type StreamTrack, type ThroughputPlan } from "./shared.js";

const agent = new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });

class PeerDriver implements Driver {
  readonly firstSequence = 1;
  readonly terminalKind = "done";
  readonly #plan: ThroughputPlan;
  readonly #open = new Set<http.ClientRequest>();

  constructor(plan: ThroughputPlan) {
    this.#plan = plan;
  }

  /** Reads one SSE response into a track; resolves with the response once its headers are in. */
  #request(method: "POST" | "GET", path: string, track: StreamTrack, sink: Sink): Promise<void> {
    const { tokens } = this.#plan;
    return new Promise((resolve, reject) => {
      const req = http.request(`${this.#plan.target}${path}`, { method, agent }, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          this.#open.delete(req);
          const e = new Error(`${method} ${res.statusCode}`);
          sink.ended(track, e.message);
          reject(e);
          return;
        }
        resolve();
        res.setEncoding("utf8");
        let buffer = "";
        res.on("data", (chunk: string) => {
          buffer += chunk;
          let from = 0;
          for (;;) {
            const end = buffer.indexOf("\n\n", from);
            if (end < 0) break;
            // "data: <seq> <sent ms> <word>"
            if (buffer.startsWith("data: ", from)) {
              const a = buffer.indexOf(" ", from + 6);
              const b = buffer.indexOf(" ", a + 1);
              const seq = Number(buffer.slice(from + 6, a));
              sink.delivery(track, seq, Number(buffer.slice(a + 1, b)), 1);
              if (seq === tokens) sink.terminal(track, "done");
            }
            from = end + 2;
          }
          buffer = from === 0 ? buffer : buffer.slice(from);
        });
        res.on("end", () => {
          this.#open.delete(req);
          sink.ended(
            track,
            track.terminalSeq === undefined ? "response ended before the last token" : undefined,
          );
        });
        res.on("error", (e) => {
          this.#open.delete(req);
          sink.ended(track, e.message);
        });
      });
      req.on("error", (e) => {
        this.#open.delete(req);
        sink.ended(track, e.message);
        reject(e);
      });
      req.setNoDelay(true);
      this.#open.add(req);
      req.end();
    });
  }

  async open(g: number, tracks: StreamTrack[], sink: Sink): Promise<void> {
    const { label, tokensPerSecond, tokens } = this.#plan;
    const id = `${label}-${g}`;
    const [first, ...rest] = tracks;
    if (!first) return;
    await this.#request("POST", `/streams/${id}?rate=${tokensPerSecond}&length=${tokens}`, first, sink);
    await Promise.all(rest.map((t) => this.#request("GET", `/streams/${id}`, t, sink).catch(() => {})));
  }

  async lastSequences(): Promise<Map<number, number>> {
    return new Map(Array.from({ length: this.#plan.generations }, (_, g) => [g, this.#plan.tokens]));
  }

  close(): void {
    for (const req of this.#open) req.destroy();
    agent.destroy();
  }
}

async function main(): Promise<void> {
  const plan = readPlan<ThroughputPlan>("throughput");
  printResult(await driveThroughput(plan, new PeerDriver(plan)));
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(
      `peer followers failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
    );
    process.exit(1);
  },
);
