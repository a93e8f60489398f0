// Prometheus metrics: one registry per process (never prom-client's global
// one, so tests and libraries cannot collide on it), served over plain HTTP
// on its own port, away from the gRPC listener.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { ProjectorMetrics } from "./projector/types.js";

export { Registry } from "prom-client";

export interface MetricsOptions {
  /** Added as the `service` label to every metric. */
  service: string;
  /** Node process metrics (CPU, memory, event loop lag, GC); default true. */
  defaultMetrics?: boolean;
}

export function createMetricsRegistry(options: MetricsOptions): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service: options.service });
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  return registry;
}

export interface MetricsServerOptions {
  registry: Registry;
  port: number;
  host?: string;
  /** Answers /readyz: 200 when true, 503 otherwise. Without it /readyz follows /healthz. */
  ready?: () => boolean;
}

export interface MetricsServer {
  /** The bound port (useful with port 0). */
  port: number;
  close(): Promise<void>;
}

/** Serves /metrics, /healthz (the process is up) and /readyz (it can serve traffic). */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
    } else if (path === "/metrics") {
      options.registry.metrics().then(
        (body) => res.writeHead(200, { "content-type": options.registry.contentType }).end(body),
        () => res.writeHead(500).end("metrics collection failed\n"),
      );
    } else if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else if (path === "/readyz") {
      const ready = options.ready?.() ?? true;
      res
        .writeHead(ready ? 200 : 503, { "content-type": "text/plain" })
        .end(ready ? "ready\n" : "not ready\n");
    } else {
      res.writeHead(404).end();
    }
  });
  // Scrapers are on the cluster network; nothing here should take long.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await listen(server, options.port, options.host ?? "0.0.0.0");
  return {
    port: (server.address() as AddressInfo).port,
    close: () => close(server),
  };
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    // Exclusive: a cluster worker binds its own socket instead of sharing the primary's for this
    // address and port. With port 0 the primary would otherwise hand every worker's metrics server
    // the same handle as the gRPC server's (both "host:0"), and deal it gRPC connections.
    server.listen({ port, host, exclusive: true }, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    // Prometheus keeps connections alive between scrapes; they must not hold shutdown.
    server.closeAllConnections();
  });
}

/**
 * Prometheus metrics for every projector of a process: events applied,
 * dead letters, and lag (stream head minus checkpoint), by projection.
 */
export function projectorMetrics(registry: Registry): ProjectorMetrics {
  const applied = new Counter({
    name: "spool_projection_events_applied_total",
    help: "Events applied by a projection (rebuild: into the tables being rebuilt).",
    labelNames: ["projection", "rebuild"],
    registers: [registry],
  });
  const lag = new Gauge({
    name: "spool_projection_lag",
    help: "Stream head sequence minus the projection's checkpoint.",
    labelNames: ["projection"],
    registers: [registry],
  });
  const deadLettered = new Counter({
    name: "spool_projection_dead_letters_total",
    help: "Events a projection gave up on and dead-lettered.",
    labelNames: ["projection"],
    registers: [registry],
  });
  return {
    applied: (projection, events, rebuild) => applied.inc({ projection, rebuild: String(rebuild) }, events),
    lag: (projection, value) => lag.set({ projection }, value),
    deadLettered: (projection) => deadLettered.inc({ projection }),
  };
}
