import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { useInfra } from "@spool/testing";
import { afterEach, describe, expect, it } from "vitest";
import { coalesceWrites, connectNats } from "./nats.js";

/** nats.js's errors module, the instance its request code reads RequestError from at call time. */
function natsCoreErrors(): { RequestError: new (message?: string, options?: ErrorOptions) => Error } {
  const fromTransport = createRequire(createRequire(import.meta.url).resolve("@nats-io/transport-node"));
  return fromTransport(join(dirname(fromTransport.resolve("@nats-io/nats-core")), "errors.js"));
}

const infra = useInfra("natswr");
const open: NatsConnection[] = [];

afterEach(async () => {
  await Promise.all(open.splice(0).map((nc) => nc.close()));
});

/** Counts the socket writes of a connection's current transport. */
function countWrites(nc: NatsConnection): { readonly count: number } {
  const socket = (
    nc as unknown as { protocol: { transport: { socket: { write: (...a: unknown[]) => boolean } } } }
  ).protocol.transport.socket;
  const counter = { count: 0 };
  const write = socket.write.bind(socket);
  socket.write = (...args: unknown[]) => {
    counter.count++;
    return write(...args);
  };
  return counter;
}

/** Publishes `n` messages from `n` separate timer callbacks that all fire in one turn of the loop. */
async function publishFromTimers(nc: NatsConnection, subject: string, n: number): Promise<void> {
  await new Promise<void>((resolve) => {
    let left = n;
    for (let i = 0; i < n; i++) {
      setTimeout(() => {
        nc.publish(subject, String(i));
        if (--left === 0) resolve();
      }, 1);
    }
  });
}

async function receive(nc: NatsConnection, subject: string, n: number): Promise<string[]> {
  const sub = nc.subscribe(subject, { max: n });
  await nc.flush();
  return (async () => {
    const got: string[] = [];
    for await (const m of sub) got.push(m.string());
    return got;
  })();
}

describe("coalesceWrites", () => {
  it("writes what one loop turn's callbacks published in one socket write, and every message arrives", async () => {
    const nc = await connectNats({ url: infra().natsUrl, name: "coalesce-test" });
    const reader = await connectNats({ url: infra().natsUrl, name: "coalesce-reader" });
    open.push(nc, reader);
    const subject = `${infra().streamPrefix}.coalesce.a`;
    const received = receive(reader, subject, 50);
    await nc.flush();
    const writes = countWrites(nc);
    await publishFromTimers(nc, subject, 50);
    await nc.flush();
    expect(await received).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    // The 50 publishes and the flush's PING: two turns at most, not 51 writes.
    expect(writes.count).toBeLessThanOrEqual(3);
  });

  it("is what makes the difference: nats.js alone writes once per callback", async () => {
    const nc = await connect({ servers: infra().natsUrl, name: "plain" });
    open.push(nc);
    const writes = countWrites(nc);
    await publishFromTimers(nc, `${infra().streamPrefix}.coalesce.b`, 50);
    await nc.flush();
    expect(writes.count).toBeGreaterThanOrEqual(50);
  });

  it("still writes a full outbound buffer at once, and requests get their replies", async () => {
    const nc = await connectNats({ url: infra().natsUrl, name: "coalesce-big" });
    open.push(nc);
    expect(coalesceWrites(nc)).toBe(true); // already done by connectNats: a second call is a no-op
    const subject = `${infra().streamPrefix}.coalesce.echo`;
    const echo = nc.subscribe(subject, {
      callback: (_e, m) => {
        m.respond(m.data);
      },
    });
    await nc.flush();
    const writes = countWrites(nc);
    const payload = new Uint8Array(20_000);
    // Synchronously, more than the 32 KiB pending limit: written before the turn ends.
    for (let i = 0; i < 5; i++) nc.publish(`${subject}.none`, payload);
    expect(writes.count).toBeGreaterThanOrEqual(1);
    const replies = await Promise.all(
      Array.from({ length: 20 }, (_, i) => nc.request(subject, String(i), { timeout: 5_000 })),
    );
    expect(replies.map((r) => r.string())).toEqual(Array.from({ length: 20 }, (_, i) => String(i)));
    echo.unsubscribe();
  });

  it("requests that got their reply leave nothing in the client's request table (patched nats.js), and an unanswered one still times out", async () => {
    const nc = await connectNats({ url: infra().natsUrl, name: "coalesce-requests" });
    open.push(nc);
    const subject = `${infra().streamPrefix}.coalesce.reqs`;
    const echo = nc.subscribe(subject, {
      callback: (_e, m) => {
        m.respond(m.data);
      },
    });
    await nc.flush();
    // The patch (patches/@nats-io__nats-core@3.4.0.patch) settles a replied request without building a
    // RequestError("cancelled"); count RequestErrors built while 100 requests complete.
    const natsErrors = natsCoreErrors();
    const original = natsErrors.RequestError;
    let built = 0;
    natsErrors.RequestError = class extends original {
      constructor(...args: ConstructorParameters<typeof original>) {
        super(...args);
        built++;
      }
    };
    try {
      for (let i = 0; i < 100; i++) await nc.request(subject, "x", { timeout: 5_000 });
    } finally {
      natsErrors.RequestError = original;
    }
    expect(built).toBe(0);
    const mux = (nc as unknown as { protocol: { muxSubscriptions: { size(): number } } }).protocol
      .muxSubscriptions;
    expect(mux.size()).toBe(0);
    echo.unsubscribe();
    await expect(nc.request(`${subject}.nobody`, "x", { timeout: 200 })).rejects.toThrow();
    expect(mux.size()).toBe(0);
  });
});
