// The throughput scenario both follower processes run, whatever carries the
// streams (gRPC FollowGeneration or HTTP server-sent events): start G
// generations evenly spread over a short interval, open F followers on each,
// wait until every follower has its first event, let it settle, measure a
// window, then wait for every stream to end and check each one.

import { Histogram } from "../lib/summary.js";
import {
  type CpuCores,
  checkStreams,
  StreamTrack,
  sampleCpu,
  sleep,
  type ThroughputPlan,
  type ThroughputResult,
  wallClock,
} from "./shared.js";

/** What a driver reports about one follower's stream. */
export interface Sink {
  /** An event: its per-stream sequence, the producer's append time (ms), the tokens it carries. */
  delivery(track: StreamTrack, sequence: number, sentMs: number, tokens: number): void;
  /** The stream's terminal event (after its delivery()). */
  terminal(track: StreamTrack, kind: string): void;
  /** The stream ended (after its terminal event, or without one when `error` or cut short). */
  ended(track: StreamTrack, error?: string): void;
}

export interface Driver {
  /** Tracks of generation g start at this sequence. */
  readonly firstSequence: number;
  /** The terminal kind a complete stream ends with. */
  readonly terminalKind: string;
  /** Starts generation g and opens its followers on `tracks` (one per follower). */
  open(g: number, tracks: StreamTrack[], sink: Sink): Promise<void>;
  /** Last sequence of each generation as the server knows it, where it can say (g → sequence). */
  lastSequences(): Promise<Map<number, number>>;
  /** Ends whatever is still open. */
  close(): void;
}

class Tracked extends StreamTrack {
  firstAt: number | undefined;
  endedAt: number | undefined;
}

export async function driveThroughput(plan: ThroughputPlan, driver: Driver): Promise<ThroughputResult> {
  const clock = wallClock();
  const G = plan.generations;
  const F = plan.followers;
  const tracks: Tracked[] = Array.from({ length: G * F }, () => new Tracked(driver.firstSequence));
  const inWindow = new Histogram();
  const all = new Histogram();
  let windowStart = Number.POSITIVE_INFINITY;
  let windowEnd = Number.NEGATIVE_INFINITY;
  let deliveries = 0;
  let tokens = 0;
  let total = 0;
  let ready = 0;
  let ended = 0;
  const allReady = Promise.withResolvers<void>();
  const allEnded = Promise.withResolvers<void>();
  const markReady = (t: Tracked, now: number) => {
    if (t.firstAt !== undefined) return;
    t.firstAt = now;
    if (++ready === tracks.length) allReady.resolve();
  };
  const sink: Sink = {
    delivery(track, sequence, sentMs, n) {
      const now = clock();
      const t = track as Tracked;
      t.see(sequence);
      total++;
      const delay = now - sentMs;
      all.record(delay);
      if (now >= windowStart && now < windowEnd) {
        deliveries++;
        tokens += n;
        inWindow.record(delay);
      }
      markReady(t, now);
    },
    terminal(track, kind) {
      track.terminalSeq = track.next - 1;
      track.terminalKind = kind;
    },
    ended(track, error) {
      const t = track as Tracked;
      if (t.ended) return;
      t.ended = true;
      t.endedAt = clock();
      if (error !== undefined) t.error = error;
      markReady(t, t.endedAt);
      if (++ended === tracks.length) allEnded.resolve();
    },
  };

  const t0 = clock();
  let firstStarted: number | undefined;
  const opening: Promise<void>[] = [];
  for (let g = 0; g < G; g++) {
    const due = t0 + (g * plan.spreadMs) / G;
    const wait = due - clock();
    if (wait >= 1) await sleep(wait);
    const mine = tracks.slice(g * F, (g + 1) * F);
    opening.push(
      driver.open(g, mine, sink).then(
        () => {
          firstStarted ??= clock();
        },
        (e: unknown) => {
          for (const t of mine) sink.ended(t, `start failed: ${e instanceof Error ? e.message : String(e)}`);
        },
      ),
    );
  }
  await Promise.all(opening);
  const setupBound = sleep(60_000).then(() => "timeout" as const);
  await Promise.race([allReady.promise, setupBound]);
  const tReady = clock();
  const durationMs = (plan.tokens / plan.tokensPerSecond) * 1000;
  // The first generation started at firstStarted and runs durationMs: the window ends before that.
  const earliestEnd = (firstStarted ?? t0) + durationMs - 500;
  windowStart = tReady + plan.warmupMs;
  windowEnd = Math.min(windowStart + plan.windowMs, earliestEnd);
  let cpu: CpuCores | undefined;
  if (windowEnd > windowStart) {
    await sleep(windowStart - clock());
    const stop = sampleCpu(plan.serverPid, plan.orchestratorPid, plan.moreServerPids);
    await sleep(windowEnd - clock());
    cpu = stop();
  }
  const windowSeconds = Math.max(0, (windowEnd - windowStart) / 1000);
  // Every stream must end for the check. A saturated producer falls behind its token rate, so its
  // streams run longer than planned: wait while events still arrive, within a bound.
  const deadline = Math.max(windowEnd, clock()) + plan.endTimeoutMs;
  let seen = total;
  let lastProgress = clock();
  let why = "";
  while (ended < tracks.length) {
    await Promise.race([allEnded.promise, sleep(500)]);
    const now = clock();
    if (total !== seen) {
      seen = total;
      lastProgress = now;
    }
    if (ended === tracks.length) break;
    if (now - lastProgress > plan.stallMs) {
      why = `no event for ${plan.stallMs} ms: stream stalled`;
      break;
    }
    if (now > deadline) {
      why = `still streaming ${plan.endTimeoutMs} ms after the window: the bench stopped waiting`;
      break;
    }
  }
  // Asked before close(): the driver's connections go with it.
  const last = await driver.lastSequences().catch(() => new Map<number, number>());
  driver.close();
  for (const t of tracks) if (!t.ended) sink.ended(t, why || "did not end");

  const expected = (t: StreamTrack, i: number): number => {
    const g = Math.floor(i / F);
    const known = last.get(g);
    if (known !== undefined) return known - driver.firstSequence + 1;
    // Unknown to the server: the most any follower of the generation saw end.
    let most = 0;
    for (const o of tracks.slice(g * F, (g + 1) * F)) {
      if (o.terminalSeq !== undefined) most = Math.max(most, o.terminalSeq - driver.firstSequence + 1);
    }
    return most === 0 ? t.received : most;
  };
  const endedInside = tracks.filter((t) => t.endedAt !== undefined && t.endedAt < windowEnd).length;
  return {
    kind: "throughput",
    offeredPerSecond: G * F * plan.tokensPerSecond,
    setupMs: tReady - t0,
    window: {
      seconds: windowSeconds,
      startMs: windowStart,
      endMs: windowEnd,
      deliveries,
      rate: windowSeconds > 0 ? deliveries / windowSeconds : 0,
      tokenRate: windowSeconds > 0 ? tokens / windowSeconds : 0,
      steady: windowSeconds >= plan.windowMs / 2000 && endedInside === 0,
      endedInside,
    },
    delayMs: inWindow.summary(),
    delayAllMs: all.summary(),
    cpu,
    check: checkStreams(tracks, expected, driver.terminalKind),
    lastSequencesFromServer: last.size,
    seconds: (clock() - t0) / 1000,
  };
}
