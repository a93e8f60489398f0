import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { connectNats, createLogger, type EventMessage, EventStore, Namespace } from "@spool/kit";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { FollowGapError, FollowTimeoutError } from "./errors.js";
import { type Decoded, FollowHub, type FollowHubOptions, type FollowItem } from "./follow-hub.js";

// A tiny event encoding for these tests: JSON {sequence, terminal, text}, one
// event per message or several in a batch, appended with the kit's EventStore
// under Nats-Expected-Last-Subject-Sequence like the real producers.
const EVENT_TYPE = "spool.test.v1.FollowEvent";
interface TestEvent {
  sequence: number;
  terminal: boolean;
  text: string;
}

const infra = useInfra("follow");
const logger = createLogger({ service: "follow-test", level: "fatal" });
let nc: Awaited<ReturnType<typeof connectNats>>;
let store: EventStore;
let stream: string;
const hubs: FollowHub<string>[] = [];

beforeAll(async () => {
  nc = await connectNats({ url: infra().natsUrl, name: "follow-hub-test" });
  store = new EventStore(nc, { namespace: new Namespace(infra().streamPrefix) });
  stream = await store.ensureStream({ name: "GEN_OUTPUT", subjects: ["gen.output.>"], maxAgeMs: 3_600_000 });
});
afterAll(async () => {
  await Promise.all(hubs.map((h) => h.close()));
  await nc?.close();
});

// Seeded, so a failing run can be replayed with SPOOL_TEST_SEED.
const seed = Number(process.env.SPOOL_TEST_SEED ?? Date.now() % 1_000_000);
function rng(salt: number): (n: number) => number {
  let a = (seed * 7919 + salt) >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

function decode(msg: EventMessage): Decoded<string>[] {
  return store.decode(stream, msg).map((e) => {
    const v = JSON.parse(Buffer.from(e.data).toString("utf8")) as TestEvent;
    return { sequence: v.sequence, terminal: v.terminal, payload: v.text };
  });
}

/** How hubs of the current describe block receive messages: one feed for all subjects, or one consumer per subject. */
type FeedMode = "stream" | "subject";
let feedMode: FeedMode = "stream";
const FEED_SUBJECT = "gen.output.>";

function newHub(overrides: Partial<FollowHubOptions<string>> = {}): FollowHub<string> {
  const hub = new FollowHub<string>({
    store,
    stream: "GEN_OUTPUT",
    subjectOf: (id) => `gen.output.${id}`,
    decode,
    logger,
    feedSubject: feedMode === "stream" ? FEED_SUBJECT : undefined,
    ...overrides,
  });
  hubs.push(hub);
  return hub;
}

function newId(label: string): string {
  return `${label}-${randomBytes(4).toString("hex")}`;
}

/** Appends a generation's events in order, fenced by the subject's last stream sequence. */
class Producer {
  readonly subject: string;
  /** texts[i] is the text of the event with sequence i + 1. */
  readonly texts: string[] = [];
  readonly streamSeqs: number[] = [];
  #last = 0;
  constructor(readonly id: string) {
    this.subject = `gen.output.${id}`;
  }

  get written(): number {
    return this.texts.length;
  }

  /** Appends `count` events in one message; the last is terminal when asked. */
  async append(count = 1, terminal = false): Promise<void> {
    const events = Array.from({ length: count }, (_, i) => {
      const sequence = this.texts.length + i + 1;
      const ev: TestEvent = {
        sequence,
        terminal: terminal && i === count - 1,
        text: `${this.id}#${sequence}:${randomBytes(6).toString("base64")}`,
      };
      return ev;
    });
    const r = await store.append(
      this.subject,
      events.map((e) => ({ type: EVENT_TYPE, schemaVersion: 1, data: Buffer.from(JSON.stringify(e)) })),
      { expectedSequence: this.#last },
    );
    this.#last = r.sequence;
    for (const e of events) {
      this.texts.push(e.text);
      this.streamSeqs.push(r.sequence);
    }
  }

  /**
   * Writes up to `total` events (the last terminal when `finish`) in messages of 1-3 events,
   * pausing at random; runs each hook once, when `written` first reaches its key.
   */
  async run(
    total: number,
    rand: (n: number) => number,
    maxDelayMs: number,
    hooks: Map<number, () => Promise<void> | void> = new Map(),
    finish = true,
  ): Promise<void> {
    const pending = [...hooks.entries()].sort((a, b) => a[0] - b[0]);
    while (this.written < total) {
      while (pending.length > 0 && (pending[0]?.[0] ?? 0) <= this.written) await pending.shift()?.[1]();
      const room = total - this.written;
      const n = Math.min(room, rand(4) === 0 ? 1 + rand(3) : 1);
      await this.append(n, finish && this.written + n === total);
      const delay = rand(maxDelayMs + 1);
      if (delay > 0) await sleep(delay);
    }
  }

  /** The events a follower starting after `after` must see. */
  expected(after: number): { sequence: number; text: string }[] {
    return this.texts.slice(after).map((text, i) => ({ sequence: after + i + 1, text }));
  }
}

interface Collected {
  events: { sequence: number; text: string; terminal: boolean }[];
  heartbeats: number;
}

async function collect(
  items: AsyncIterable<FollowItem<string>>,
  onItem?: (item: FollowItem<string>, got: Collected) => Promise<void> | void,
): Promise<Collected> {
  const got: Collected = { events: [], heartbeats: 0 };
  for await (const item of items) {
    if (item.kind === "event") {
      got.events.push({ sequence: item.sequence, text: item.payload, terminal: item.terminal });
    } else {
      got.heartbeats++;
    }
    await onItem?.(item, got);
  }
  return got;
}

function plain(got: Collected): { sequence: number; text: string }[] {
  return got.events.map(({ sequence, text }) => ({ sequence, text }));
}

/** JetStream consumers on the server reading this generation's subject. */
async function serverConsumers(subject: string): Promise<number> {
  const jsm = await store.manager();
  const full = store.namespace.subject(subject);
  let n = 0;
  for await (const ci of jsm.consumers.list(stream)) {
    if (ci.config.filter_subject === full || ci.config.filter_subjects?.includes(full)) n++;
  }
  return n;
}

describe.each<{ mode: FeedMode }>([{ mode: "stream" }, { mode: "subject" }])(
  `FollowHub, $mode feed (seed ${seed})`,
  ({ mode }) => {
    beforeAll(() => {
      feedMode = mode;
    });

    /** Consumers on the server delivering `subject` live: its own (subject mode), or this hub's feed. */
    async function liveConsumers(hub: FollowHub<string>, subject: string): Promise<number> {
      if (mode === "subject") return serverConsumers(subject);
      // The feed serves every subject; no consumer of the subject's own.
      expect(await serverConsumers(subject)).toBe(0);
      return hub.stats().feedConsuming ? 1 : 0;
    }

    it("fans one subscription out to ten followers, early and late, with identical gap-free sequences", async () => {
      const rand = rng(1);
      // A small ring, so late joiners are stitched from the log onto the live tail.
      const hub = newHub({ bufferEvents: 24 });
      const id = newId("ten");
      const producer = new Producer(id);
      const total = 240;
      const ac = new AbortController();

      const followers: { after: number; done: Promise<Collected>; progress: { last: number } }[] = [];
      const join = (after: number) => {
        const progress = { last: after };
        const done = collect(hub.follow(id, after, ac.signal), (item) => {
          if (item.kind === "event") progress.last = item.sequence;
        });
        followers.push({ after, done, progress });
      };

      for (let i = 0; i < 4; i++) join(0);
      // Late joiners, as the producer passes each mark: after = 0, a random stored
      // sequence, or the current tail.
      const hooks = new Map<number, () => void>([
        [40, () => [0, 0].forEach(join)],
        [90, () => [1 + rand(89), 1 + rand(89)].forEach(join)],
        [150, () => join(producer.written)],
        [200, () => join(0)],
      ]);

      // Writes everything but the terminal event.
      await producer.run(total - 1, rand, 3, hooks, false);
      expect(followers).toHaveLength(10);

      // Every follower has reached the last event written so far: all ten share one subscription.
      await vi.waitFor(
        () => expect(followers.map((f) => f.progress.last)).toEqual(followers.map(() => total - 1)),
        { timeout: 15_000, interval: 20 },
      );
      expect(hub.stats()).toMatchObject({ subscriptions: 1, followers: 10 });
      // On the server, one consumer reads the subject (catch-up reads are closed by now).
      await vi.waitFor(async () => expect(await liveConsumers(hub, producer.subject)).toBe(1), {
        timeout: 10_000,
        interval: 50,
      });

      await producer.append(1, true);
      const results = await Promise.all(followers.map((f) => f.done));
      results.forEach((got, i) => {
        const after = followers[i]?.after ?? -1;
        expect(plain(got), `follower ${i} after ${after}`).toEqual(producer.expected(after));
        expect(got.events.at(-1)?.terminal).toBe(true);
      });
      // The late joiners with after = 0 needed the log: the stitch was exercised.
      expect(hub.stats()).toMatchObject({ subscriptionsOpened: 1, sharedConsumers: 1, followers: 0 });
      expect(hub.stats().catchUps).toBeGreaterThan(0);
    });

    it("a follower disconnected 50 times at random points and resumed gets every event exactly once", async () => {
      const rand = rng(2);
      // Two replicas' hubs: one releases its subscription at once (every resume anchors
      // anew and reads the log), one keeps it a while (resumes from memory).
      const replicas = [
        newHub({ idleUnsubscribeMs: 0, bufferEvents: 8 }),
        newHub({ idleUnsubscribeMs: 2_000, bufferEvents: 64 }),
      ] as const;
      const id = newId("resume");
      const producer = new Producer(id);
      const total = 420;
      const producing = producer.run(total, rand, 3);

      const received: { sequence: number; text: string }[] = [];
      let last = 0;
      let disconnects = 0;
      let ended = false;
      while (!ended) {
        const hub = replicas[rand(2)] ?? replicas[0];
        const ac = new AbortController();
        // At most 7 events per connection, so 50 disconnects come before the end.
        const cut = disconnects < 50 ? 1 + rand(7) : Number.POSITIVE_INFINITY;
        const timer = disconnects < 50 && rand(3) === 0 ? setTimeout(() => ac.abort(), rand(15)) : undefined;
        let inThisConnection = 0;
        let afterAbort = 0;
        for await (const item of hub.follow(id, last, ac.signal)) {
          if (item.kind !== "event") continue;
          if (ac.signal.aborted) afterAbort++;
          received.push({ sequence: item.sequence, text: item.payload });
          last = item.sequence;
          if (item.terminal) ended = true;
          if (++inThisConnection >= cut) ac.abort();
        }
        clearTimeout(timer);
        // An abort ends the follow at once: nothing is delivered after it.
        expect(afterAbort).toBe(0);
        if (!ended) {
          expect(ac.signal.aborted).toBe(true);
          disconnects++;
        }
      }
      await producing;
      expect(disconnects).toBeGreaterThanOrEqual(50);
      expect(received).toEqual(producer.expected(0));
      for (const hub of replicas) expect(hub.stats().followers).toBe(0);
    });

    it("direct delivery: live followers take events straight from the subscription, fall back to the iterator when refused, and get every event once, in order", async () => {
      const rand = rng(13);
      // A small ring, so the late joiners catch up from the log (iterator) before going direct.
      const hub = newHub({ bufferEvents: 16, heartbeatMs: 30 });
      const producer = new Producer(newId("direct"));
      const total = 300;
      const ac = new AbortController();
      interface Run {
        got: { sequence: number; text: string; terminal: boolean }[];
        direct: number;
        iterated: number;
        done?: Promise<void>;
      }
      // refuse: the share of direct offers refused (a client that is sometimes behind); undefined: no direct delivery.
      const start = (after: number, refuse: number | undefined): Run => {
        const run: Run = { got: [], direct: 0, iterated: 0 };
        const direct =
          refuse === undefined
            ? undefined
            : (e: { sequence: number; terminal: boolean; payload: string }) => {
                if (rand(100) < refuse) {
                  // Half the refusals throw: the hub takes a throw as a refusal.
                  if (rand(2) === 0) throw new Error("transport refused");
                  return false;
                }
                run.direct++;
                run.got.push({ sequence: e.sequence, text: e.payload, terminal: e.terminal });
                return true;
              };
        run.done = (async () => {
          for await (const item of hub.follow(producer.id, after, ac.signal, { direct })) {
            if (item.kind !== "event") continue;
            run.iterated++;
            run.got.push({ sequence: item.sequence, text: item.payload, terminal: item.terminal });
            // A slow iterator now and then, so offers arrive while the follower is not waiting.
            if (rand(20) === 0) await sleep(2);
          }
        })();
        return run;
      };
      const runs: { after: number; run: Run }[] = [];
      for (const refuse of [0, 0, 30, 90, undefined]) runs.push({ after: 0, run: start(0, refuse) });
      const hooks = new Map<number, () => void>([
        [120, () => runs.push({ after: 0, run: start(0, 0) }, { after: 60, run: start(60, 20) })],
      ]);
      await producer.run(total, rand, 3, hooks);
      await Promise.all(runs.map((r) => r.run.done));
      for (const { after, run } of runs) {
        expect(run.got.map(({ sequence, text }) => ({ sequence, text }))).toEqual(producer.expected(after));
        // The terminal event always comes through the iterator, last.
        expect(run.got.at(-1)?.terminal).toBe(true);
        expect(run.got.filter((e) => e.terminal)).toHaveLength(1);
      }
      const [always, , sometimes, mostly, none, late] = runs.map((r) => r.run);
      // Live followers took most events directly; refusals went through the iterator.
      expect(always?.direct).toBeGreaterThan(total / 2);
      expect(sometimes?.direct).toBeGreaterThan(0);
      expect(sometimes?.iterated).toBeGreaterThan(1);
      expect(mostly?.iterated).toBeGreaterThan(total / 2);
      expect(none?.direct).toBe(0);
      expect(late?.direct).toBeGreaterThan(0);
      expect(hub.stats().followers).toBe(0);
    });

    it("several subjects stream at once, joining and leaving (their subscriptions dropped and made anew) without a lost or repeated event", async () => {
      const rand = rng(14);
      const hub = newHub({ idleUnsubscribeMs: 0 });
      const producers = Array.from({ length: 5 }, (_, i) => new Producer(newId(`multi${i}`)));
      const total = 150;
      const ac = new AbortController();
      const runs: { p: Producer; after: number; done: Promise<Collected> }[] = [];
      const join = (p: Producer, after: number) => {
        runs.push({ p, after, done: collect(hub.follow(p.id, after, ac.signal)) });
      };
      for (const p of producers.slice(0, 3)) join(p, 0);
      // Subject 0's only follower leaves at 50 (its subscription is dropped) and one joins it again at 90.
      const leaver = new AbortController();
      const left = collect(hub.follow(producers[0]!.id, 0, leaver.signal));
      const [p0, p1, p3, p4] = [producers[0]!, producers[1]!, producers[3]!, producers[4]!];
      const hooks = (p: Producer) => {
        const h = new Map<number, () => void>();
        if (p === p1) {
          h.set(30, () => {
            join(p3, 0);
            join(p4, 0);
          });
        }
        if (p === p0) {
          h.set(50, () => leaver.abort());
          h.set(90, () => join(p0, rand(90)));
        }
        return h;
      };
      await Promise.all(producers.map((p) => p.run(total, rand, 3, hooks(p))));
      const results = await Promise.all(runs.map((r) => r.done));
      for (const [i, got] of results.entries()) {
        expect(plain(got)).toEqual(runs[i]!.p.expected(runs[i]!.after));
      }
      const partial = plain(await left);
      expect(partial).toEqual(producers[0]!.expected(0).slice(0, partial.length));
      const stats = hub.stats();
      expect(stats.followers).toBe(0);
      if (mode === "stream") {
        // One consumer fed all five subjects (a second only if every subject had left at once).
        expect(stats.sharedConsumers).toBeLessThanOrEqual(2);
      } else {
        expect(stats.sharedConsumers).toBeGreaterThanOrEqual(5);
      }
    });

    it("the last subscription leaving stops the feed; one made at once after it streams, and nothing looks stalled", async () => {
      const hub = newHub({ idleUnsubscribeMs: 0, stallTimeoutMs: 150, heartbeatMs: 50 });
      const first = new Producer(newId("leave"));
      const second = new Producer(newId("next"));
      await first.append(3);
      const ac = new AbortController();
      const leaving = new AbortController();
      await collect(hub.follow(first.id, 0, leaving.signal), (_item, got) => {
        if (got.events.length === 3) leaving.abort();
      });
      // The only subscription is gone: a new one comes right away.
      const following = collect(hub.follow(second.id, 0, ac.signal));
      await second.run(30, rng(15), 10);
      expect(plain(await following)).toEqual(second.expected(0));
      // Idle now: several stall periods pass without a (false) stall restart.
      await sleep(600);
      expect(hub.stats()).toMatchObject({ followers: 0, sharedRestarts: 0, feedConsuming: false });
    });

    it("a follower joining after the terminal event gets the stored stream and ends", async () => {
      const rand = rng(3);
      const hub = newHub();
      const producer = new Producer(newId("done"));
      await producer.run(37, rand, 0);

      const ac = new AbortController();
      const all = await collect(hub.follow(producer.id, 0, ac.signal));
      expect(plain(all)).toEqual(producer.expected(0));
      expect(all.events.at(-1)?.terminal).toBe(true);

      const rest = await collect(hub.follow(producer.id, 20, ac.signal));
      expect(plain(rest)).toEqual(producer.expected(20));

      const none = await collect(hub.follow(producer.id, 37, ac.signal));
      expect(none.events).toEqual([]);
      // A finished subject needs no live consumer: the anchor was the terminal event.
      expect(hub.stats()).toMatchObject({ sharedConsumers: 0, followers: 0 });
    });

    it("a slow follower does not hold back a fast one, stays bounded in memory, and catches up from the log", async () => {
      const rand = rng(4);
      const bufferEvents = 16;
      const hub = newHub({ bufferEvents });
      const producer = new Producer(newId("slow"));
      const total = 300;
      const ac = new AbortController();

      let fastDone!: () => void;
      const fastFinished = new Promise<void>((r) => (fastDone = r));
      const slow = collect(hub.follow(producer.id, 0, ac.signal), async (_item, got) => {
        // Takes one event, then stops reading until the fast follower has everything:
        // if it held the others back, this would never resolve.
        if (got.events.length === 1) await fastFinished;
        if (rand(10) === 0) await sleep(1);
      });
      const fast = collect(hub.follow(producer.id, 0, ac.signal));
      await producer.run(total, rand, 1);

      const fastGot = await fast;
      expect(plain(fastGot)).toEqual(producer.expected(0));
      // While the slow follower sits far behind, the hub holds no more than its ring.
      expect(hub.stats().bufferedEvents).toBeLessThanOrEqual(bufferEvents);
      fastDone();

      const slowGot = await slow;
      expect(plain(slowGot)).toEqual(producer.expected(0));
      expect(hub.stats().catchUps).toBeGreaterThan(0);
    });

    it("sends heartbeats while the producer is idle, and waits on an empty subject", async () => {
      const hub = newHub({ heartbeatMs: 40 });
      const producer = new Producer(newId("idle"));
      const ac = new AbortController();
      let heartbeatsBeforeFirst = 0;
      let heartbeatsInPause = 0;
      let sawFirst!: () => void;
      const firstSeen = new Promise<void>((r) => (sawFirst = r));
      let pauseBeat!: () => void;
      const beatInPause = new Promise<void>((r) => (pauseBeat = r));
      const following = collect(hub.follow(producer.id, 0, ac.signal), (item, got) => {
        if (item.kind === "heartbeat") {
          if (got.events.length === 0) heartbeatsBeforeFirst++;
          if (got.events.length === 3) {
            heartbeatsInPause++;
            pauseBeat();
          }
        } else if (got.events.length === 1) {
          sawFirst();
        }
      });

      // The subject is empty: the follow waits (with heartbeats) for the first event.
      await vi.waitFor(() => expect(heartbeatsBeforeFirst).toBeGreaterThanOrEqual(2), { timeout: 10_000 });
      await producer.append(1);
      await firstSeen;
      await producer.append(2);
      // The producer goes quiet: heartbeats keep the stream open until it writes again.
      await beatInPause;
      await producer.append(1, true);

      const got = await following;
      expect(plain(got)).toEqual(producer.expected(0));
      expect(heartbeatsInPause).toBeGreaterThanOrEqual(1);
    });

    it("bounds the wait on a subject that stays empty", async () => {
      const hub = newHub({ heartbeatMs: 30 });
      const ac = new AbortController();
      let heartbeats = 0;
      await expect(
        collect(hub.follow(newId("empty"), 0, ac.signal, { idleTimeoutMs: 200 }), () => {
          heartbeats++;
        }),
      ).rejects.toBeInstanceOf(FollowTimeoutError);
      expect(heartbeats).toBeGreaterThan(0);
      expect(hub.stats().followers).toBe(0);
    });

    it("an abort while waiting ends the follow and frees its subscription", async () => {
      const hub = newHub({ idleUnsubscribeMs: 0, heartbeatMs: 20 });
      const producer = new Producer(newId("abort"));
      await producer.append(2);
      const ac = new AbortController();
      const following = collect(hub.follow(producer.id, 0, ac.signal), (item) => {
        // Aborts while waiting for a third event that never comes.
        if (item.kind === "heartbeat") ac.abort();
      });
      const got = await following;
      expect(plain(got)).toEqual(producer.expected(0));
      expect(hub.stats()).toMatchObject({ followers: 0, subscriptions: 0 });
      await vi.waitFor(async () => expect(await liveConsumers(hub, producer.subject)).toBe(0), {
        timeout: 10_000,
      });
    });

    it("keeps delivering when the consumers are deleted on the server, shared and catch-up alike", async () => {
      const rand = rng(5);
      const hub = newHub({ bufferEvents: 8 });
      const producer = new Producer(newId("recreate"));
      const total = 160;
      const ac = new AbortController();
      const live = collect(hub.follow(producer.id, 0, ac.signal));
      // Reads slowly, so it is often on a log read when the consumers go.
      const slow = collect(hub.follow(producer.id, 0, ac.signal), async () => {
        if (rand(4) === 0) await sleep(2);
      });
      const jsm = await store.manager();
      const full = store.namespace.subject(producer.subject);
      const deleteConsumers = async () => {
        for await (const ci of jsm.consumers.list(stream)) {
          // The subject's own consumers, and (stream mode) every feed: another test's hub just recreates its own.
          const feed = ci.config.filter_subject === store.namespace.subject(FEED_SUBJECT);
          if (ci.config.filter_subject === full || feed)
            await jsm.consumers.delete(stream, ci.name).catch(() => {});
        }
      };
      const hooks = new Map([
        [40, deleteConsumers],
        [100, deleteConsumers],
      ]);
      await producer.run(total, rand, 2, hooks);
      const [liveGot, slowGot] = await Promise.all([live, slow]);
      expect(plain(liveGot)).toEqual(producer.expected(0));
      expect(plain(slowGot)).toEqual(producer.expected(0));
      // The shared consumer was recreated (from where it was), not left to nats.js's slow recovery.
      expect(hub.stats().sharedRestarts).toBeGreaterThanOrEqual(2);
      expect(hub.stats().subscriptionsOpened).toBe(1);
    });

    it("does not mistake a quiet subscription for a stalled one", async () => {
      const hub = newHub({ stallTimeoutMs: 150, heartbeatMs: 50 });
      const producer = new Producer(newId("quiet"));
      await producer.append(1);
      const ac = new AbortController();
      const following = collect(hub.follow(producer.id, 0, ac.signal), async (item, got) => {
        // Several stall periods pass with nothing new on the subject, then the producer ends it.
        if (item.kind === "heartbeat" && got.heartbeats === 10) await producer.append(2, true);
      });
      const got = await following;
      expect(plain(got)).toEqual(producer.expected(0));
      expect(hub.stats()).toMatchObject({ sharedConsumers: 1, sharedRestarts: 0 });
    });

    it("stops with a typed error instead of skipping events missing from the log", async () => {
      const hub = newHub({ bufferEvents: 2 });
      const producer = new Producer(newId("gap"));
      for (let i = 0; i < 10; i++) await producer.append(1, i === 9);
      // Event 4 expires (as the delivery stream's retention would remove it).
      const jsm = await store.manager();
      await jsm.streams.deleteMessage(stream, producer.streamSeqs[3] ?? 0);

      const ac = new AbortController();
      const seen: number[] = [];
      const err = await collect(hub.follow(producer.id, 0, ac.signal), (item) => {
        if (item.kind === "event") seen.push(item.sequence);
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FollowGapError);
      expect(err).toMatchObject({ missingFrom: 4, found: 5 });
      expect(seen).toEqual([1, 2, 3]);

      // Following from past the hole is fine.
      const rest = await collect(hub.follow(producer.id, 4, ac.signal));
      expect(plain(rest)).toEqual(producer.expected(4));
    });

    it("delivers what precedes an undecodable message, then fails instead of skipping it", async () => {
      const hub = newHub();
      const producer = new Producer(newId("poison"));
      await producer.append(2);
      const ac = new AbortController();
      const seen: number[] = [];
      const following = collect(hub.follow(producer.id, 0, ac.signal), (item) => {
        if (item.kind === "event") seen.push(item.sequence);
      }).catch((e: unknown) => e);
      await vi.waitFor(() => expect(seen).toEqual([1, 2]));
      await store.append(producer.subject, [
        { type: EVENT_TYPE, schemaVersion: 1, data: Buffer.from("not json") },
      ]);
      const err = await following;
      expect(err).toBeInstanceOf(SyntaxError);
      expect(seen).toEqual([1, 2]);
    });

    it("live followers wait without a timer or abort listener per event", async () => {
      const hub = newHub();
      const producer = new Producer(newId("quiet-waits"));
      const followers = 20;
      const events = 100;
      const ac = new AbortController();
      const signal = ac.signal;
      const listen = vi.spyOn(signal, "addEventListener");
      const timers = vi.spyOn(globalThis, "setTimeout");
      const all = Array.from({ length: followers }, () => collect(hub.follow(producer.id, 0, signal)));
      for (let i = 0; i < events; i++) {
        await producer.append(1, i === events - 1);
        // Every follower waits between two events, so each event wakes them all.
        await sleep(1);
      }
      const results = await Promise.all(all);
      for (const got of results) expect(plain(got)).toEqual(producer.expected(0));
      // One abort listener per follow for its whole life (the old code added one per wait) ...
      expect(listen.mock.calls.filter(([type]) => type === "abort").length).toBeLessThanOrEqual(followers);
      // ... and timers: the producer's requests and sleeps (~2 per event), a few per follower, never one per delivery.
      expect(timers.mock.calls.length).toBeLessThan((followers * events) / 4);
      listen.mockRestore();
      timers.mockRestore();
    });

    it("many followers catching up on a fresh hub share one log read per subject", async () => {
      const rand = rng(11);
      const generations = 10;
      const perGeneration = 100;
      const producers = Array.from({ length: generations }, (_, g) => new Producer(newId(`burst${g}`)));
      for (const p of producers) await p.run(60, rand, 0);
      // A replica that just started: nothing in memory, a small ring, 1,000 followers resuming at once.
      const hub = newHub({ bufferEvents: 8 });
      const ac = new AbortController();
      const runs = producers.flatMap((p) =>
        Array.from({ length: perGeneration }, () => {
          const after = rand(60);
          return { p, after, done: collect(hub.follow(p.id, after, ac.signal)) };
        }),
      );
      const results = await Promise.all(runs.map((r) => r.done));
      results.forEach((got, i) => {
        const r = runs[i]!;
        expect(plain(got)).toEqual(r.p.expected(r.after));
      });
      const stats = hub.stats();
      // One consumer per generation for the catch-up (not one per follower), plus its shared subscription.
      expect(stats.sharedCatchUps).toBeGreaterThan(0);
      expect(stats.catchUps).toBeLessThanOrEqual(generations);
      expect(stats.catchUps).toBe(stats.sharedCatchUps);
      expect(stats.sharedConsumers).toBe(0); // finished subjects need no live consumer
      expect(stats.followers).toBe(0);
    });

    it("without sharing, followers reading the log alone stay within the cap and all complete", async () => {
      const rand = rng(12);
      const producers = Array.from({ length: 3 }, (_, g) => new Producer(newId(`capped${g}`)));
      for (const p of producers) await p.run(40, rand, 0);
      const maxCatchUpReads = 4;
      const hub = newHub({ bufferEvents: 4, catchUpBytes: 0, maxCatchUpReads });
      const ac = new AbortController();
      let mostOpen = 0;
      const sampler = setInterval(() => {
        mostOpen = Math.max(mostOpen, hub.stats().catchUpReadsOpen);
      }, 1);
      const runs = producers.flatMap((p) =>
        Array.from({ length: 10 }, () => ({ p, done: collect(hub.follow(p.id, 0, ac.signal)) })),
      );
      const results = await Promise.all(runs.map((r) => r.done));
      clearInterval(sampler);
      for (const [i, got] of results.entries()) expect(plain(got)).toEqual(runs[i]!.p.expected(0));
      const stats = hub.stats();
      // Each follower read alone (the behaviour before shared reads: a consumer per follower) ...
      expect(stats.sharedCatchUps).toBe(0);
      expect(stats.catchUps).toBe(30);
      // ... but never more than the cap at once; the rest waited their turn.
      expect(mostOpen).toBeLessThanOrEqual(maxCatchUpReads);
      expect(stats.catchUpWaits).toBeGreaterThan(0);
      expect(stats.catchUpReadsOpen).toBe(0);
    });

    it("rejects a bad resume position with a typed error", () => {
      const hub = newHub();
      const ac = new AbortController();
      // Named as in the proto (FollowGenerationRequest.after_sequence), like every field violation.
      for (const bad of [-1, 1.5, 2 ** 53]) {
        expect(() => hub.follow("x", bad, ac.signal)).toThrowError(
          expect.objectContaining({ violations: [expect.objectContaining({ field: "after_sequence" })] }),
        );
      }
    });
  },
);
