// Graceful shutdown of a real service process: SIGTERM while a slow call is
// in flight, and the ways starting can fail.
import { fileURLToPath } from "node:url";
import { type Client, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { type Child, eventually, runTs, useInfra } from "@spool/testing";
import { afterEach, describe, expect, it } from "vitest";
import { callError, clientFor, ProbeService, unaryCall } from "../../test/grpc-probe.js";

const infra = useInfra("grpcstop");
const MAIN = fileURLToPath(new URL("../../test/grpc-server-main.ts", import.meta.url));
const children: Child[] = [];
const clients: Client[] = [];
const servicePids: number[] = [];

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  for (const child of children.splice(0)) if (child.proc.exitCode === null) child.kill("SIGKILL");
  for (const pid of servicePids.splice(0)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Already gone: the usual case.
    }
  }
});

interface Started {
  child: Child;
  port: number;
  metricsPort: number;
  /**
   * The service's own process. runTs starts it under a tsx wrapper that
   * relays signals with a 30 ms handshake and SIGKILLs the service when the
   * handshake is late (a loaded machine), so the test signals the service
   * directly, as Kubernetes would.
   */
  signal: (signal: NodeJS.Signals) => void;
}

async function startService(env: Record<string, string> = {}): Promise<Started> {
  const child = runTs(MAIN, {
    env: {
      ...infra().env,
      SPOOL_GRPC_HOST: "127.0.0.1",
      SPOOL_GRPC_PORT: "0",
      SPOOL_METRICS_PORT: "0",
      SPOOL_SHUTDOWN_GRACE_MS: "5000",
      ...env,
    },
  });
  children.push(child);
  const listening = await child.waitFor(/"port":\d+[^\n]*"msg":"grpc server listening"/);
  const metrics = await child.waitFor(/"metricsPort":\d+,"pid":\d+/);
  const [metricsPort, pid] = [...metrics.matchAll(/\d+/g)].map((m) => Number(m[0]));
  servicePids.push(pid!);
  return {
    child,
    port: Number(/"port":(\d+)/.exec(listening)?.[1]),
    metricsPort: metricsPort!,
    signal: (signal) => process.kill(pid!, signal),
  };
}

function newClient(port: number): Client {
  const client = clientFor(`127.0.0.1:${port}`);
  clients.push(client);
  return client;
}

function withRequestId(id: string): Metadata {
  const metadata = new Metadata();
  metadata.set("x-request-id", id);
  return metadata;
}

/** The process's in-flight gauge for Echo, read from its /metrics endpoint. */
async function echoInFlight(metricsPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const line = text
    .split("\n")
    .find((l) => l.startsWith("spool_grpc_server_in_flight_calls{") && l.includes("Echo"));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

describe("graceful shutdown", () => {
  it("on SIGTERM finishes the in-flight call, refuses new ones, closes in order and exits 0", async () => {
    const { child, port, metricsPort, signal } = await startService();
    const client = newClient(port);
    expect((await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status).toBe(200);

    const slow = unaryCall(
      client,
      ProbeService.echo,
      { text: "slow", delayMs: 1_500 },
      {
        metadata: withRequestId("in-flight"),
        timeoutMs: 10_000,
      },
    );
    await eventually(async () => (await echoInFlight(metricsPort)) === 1, {
      what: "the slow call in flight",
    });

    const signalledAt = Date.now();
    signal("SIGTERM");
    await child.waitFor(/"msg":"shutting down"/);

    // On the connection the slow call uses, and on a new one.
    const refused = await callError(
      unaryCall(client, ProbeService.echo, { text: "late" }, { timeoutMs: 2_000 }),
    );
    expect(status[refused.code]).toBe("UNAVAILABLE");
    const fresh = await callError(
      unaryCall(newClient(port), ProbeService.echo, { text: "late" }, { timeoutMs: 2_000 }),
    );
    expect(status[fresh.code]).toBe("UNAVAILABLE");

    const { response } = await slow;
    expect(response).toMatchObject({ text: "slow", requestId: "in-flight" });

    expect(await child.exited, child.output()).toBe(0);
    expect(Date.now() - signalledAt).toBeLessThan(5_000);
    const closed = [...child.output().matchAll(/"closer":"([^"]+)","msg":"closed"/g)].map((m) => m[1]);
    // Consumers stop first, then NATS drains while the stores are still open. (The relative order of
    // the last closers' log lines was seen to vary once in CI, so only the order that matters is asserted.)
    expect(new Set(closed), child.output()).toEqual(
      new Set(["consumer orders", "nats", "redis", "postgres", "metrics"]),
    );
    expect(closed[0]).toBe("consumer orders");
    expect(closed.indexOf("nats")).toBeLessThan(closed.indexOf("postgres"));
    expect(closed.indexOf("nats")).toBeLessThan(closed.indexOf("redis"));
    expect(child.output()).toMatch(/"clean":true,"forced":false/);
    await expect(fetch(`http://127.0.0.1:${metricsPort}/metrics`)).rejects.toThrow();
  });

  it("cancels calls still running when the grace period ends and exits non-zero", async () => {
    const { child, port, metricsPort, signal } = await startService({ SPOOL_SHUTDOWN_GRACE_MS: "500" });
    const slow = callError(
      unaryCall(newClient(port), ProbeService.echo, { delayMs: 10_000 }, { timeoutMs: 20_000 }),
    );
    await eventually(async () => (await echoInFlight(metricsPort)) === 1, {
      what: "the slow call in flight",
    });
    const signalledAt = Date.now();
    signal("SIGTERM");
    const err: ServiceError = await slow;
    expect(["CANCELLED", "UNAVAILABLE", "INTERNAL"]).toContain(status[err.code]);
    expect(await child.exited).toBe(1);
    expect(Date.now() - signalledAt).toBeLessThan(4_000);
    expect(child.output()).toMatch(/"clean":false,"forced":true/);
  });
});

describe("start-up failures", () => {
  it("exits 78 naming the bad variable when the configuration is invalid", async () => {
    const child = runTs(MAIN, { env: { ...infra().env, SPOOL_GRPC_PORT: "not-a-port" } });
    children.push(child);
    expect(await child.exited).toBe(78);
    expect(child.output()).toContain("SPOOL_GRPC_PORT");
  });

  it("exits 1 with the reason logged when a dependency is unreachable", async () => {
    const child = runTs(MAIN, {
      env: {
        ...infra().env,
        SPOOL_GRPC_PORT: "0",
        SPOOL_METRICS_PORT: "0",
        SPOOL_NATS_URL: "nats://127.0.0.1:1",
      },
    });
    children.push(child);
    expect(await child.exited).toBe(1);
    expect(child.output()).toMatch(/"level":"fatal".*cannot connect to NATS/);
  });
});
