// grpc.health.v1.Health, SERVING only while every registered dependency check
// passes. Checks run in the background (periodically and on demand) so a
// health probe is answered from memory and never waits on a sick dependency.
import type { Server, ServerWritableStream, UntypedServiceImplementation } from "@grpc/grpc-js";
import type { NatsConnection } from "@nats-io/transport-node";
import { HealthImplementation, service as healthDefinition, type ServingStatus } from "grpc-health-check";
import type { Logger } from "../logger.js";
import type { ManagedConsumer } from "../managed.js";
import { isNatsConnected } from "../nats.js";
import type { Sql } from "../postgres.js";

export const HEALTH_SERVICE_NAME = "grpc.health.v1.Health";

/** A named dependency check: true (or resolving true) when the dependency is usable. */
export interface HealthCheck {
  name: string;
  check(): boolean | Promise<boolean>;
}

export interface HealthMonitorOptions {
  logger: Logger;
  /** How often checks run in the background (default 1500 ms). */
  intervalMs?: number;
  /** A check slower than this counts as failed (default 1000 ms). */
  checkTimeoutMs?: number;
}

export interface HealthReport {
  status: ServingStatus;
  failing: string[];
}

export class HealthMonitor {
  readonly #impl = new HealthImplementation({ "": "NOT_SERVING" });
  readonly #checks = new Map<string, HealthCheck>();
  readonly #services = new Set<string>([""]);
  readonly #logger: Logger;
  readonly #intervalMs: number;
  readonly #checkTimeoutMs: number;
  readonly #watches = new Set<ServerWritableStream<unknown, unknown>>();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<HealthReport> | undefined;
  #last: HealthReport = { status: "NOT_SERVING", failing: [] };
  #stopped = false;
  /** Conditions that hold NOT_SERVING whatever the checks say (e.g. "starting"). */
  readonly #holds = new Set<string>();

  constructor(options: HealthMonitorOptions) {
    this.#logger = options.logger;
    this.#intervalMs = options.intervalMs ?? 1500;
    this.#checkTimeoutMs = options.checkTimeoutMs ?? 1000;
  }

  addCheck(check: HealthCheck): this {
    if (this.#checks.has(check.name)) throw new Error(`health check ${check.name} is already registered`);
    this.#checks.set(check.name, check);
    return this;
  }

  /** A service name answered with the overall status (its own dependencies are the process's). */
  addService(name: string): this {
    this.#services.add(name);
    this.#impl.setStatus(name, this.#last.status);
    return this;
  }

  /**
   * Reports NOT_SERVING, with `reason` among the failing, until release(reason):
   * the server answers health while the service is still starting.
   */
  hold(reason: string): this {
    this.#holds.add(reason);
    if (!this.#stopped) {
      this.#publish({
        status: "NOT_SERVING",
        failing: [...new Set([...this.#holds, ...this.#last.failing])],
      });
    }
    return this;
  }

  release(reason: string): this {
    this.#holds.delete(reason);
    return this;
  }

  get current(): HealthReport {
    return this.#last;
  }

  /** Runs every check now; concurrent callers share one run. */
  refresh(): Promise<HealthReport> {
    this.#running ??= this.#runChecks().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  start(): void {
    if (this.#timer || this.#stopped) return;
    void this.refresh();
    this.#timer = setInterval(() => void this.refresh(), this.#intervalMs);
    this.#timer.unref();
  }

  /** Reports NOT_SERVING from now on and ends Watch streams so they do not hold up shutdown. */
  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#publish({ status: "NOT_SERVING", failing: ["shutting down"] });
    // Let the NOT_SERVING update reach watchers before their streams end.
    setImmediate(() => {
      for (const call of this.#watches) call.end();
      this.#watches.clear();
    });
  }

  addToServer(server: Pick<Server, "addService">): void {
    this.#impl.addToServer({
      addService: (definition, implementation) =>
        server.addService(definition as never, this.#trackWatches(implementation)),
    });
  }

  /** File descriptors of health.proto, for server reflection. */
  static fileDescriptorProtos(): Buffer[] {
    const method = Object.values(healthDefinition)[0];
    return method ? [...method.requestType.fileDescriptorProtos] : [];
  }

  #trackWatches(implementation: UntypedServiceImplementation): UntypedServiceImplementation {
    const watch = implementation.watch as
      | ((call: ServerWritableStream<unknown, unknown>) => void)
      | undefined;
    if (!watch) return implementation;
    return {
      ...implementation,
      watch: (call: ServerWritableStream<unknown, unknown>) => {
        this.#watches.add(call);
        call.once("cancelled", () => this.#watches.delete(call));
        watch(call);
      },
    };
  }

  async #runChecks(): Promise<HealthReport> {
    const checks = [...this.#checks.values()];
    const results = await Promise.all(checks.map((c) => this.#passes(c)));
    const failing = [...this.#holds, ...checks.filter((_, i) => !results[i]).map((c) => c.name)];
    const report: HealthReport = { status: failing.length === 0 ? "SERVING" : "NOT_SERVING", failing };
    if (!this.#stopped) this.#publish(report);
    return this.#stopped ? this.#last : report;
  }

  async #passes(check: HealthCheck): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), this.#checkTimeoutMs);
    });
    try {
      return (await Promise.race([Promise.resolve().then(() => check.check()), timeout])) === true;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  #publish(report: HealthReport): void {
    const previous = this.#last;
    this.#last = report;
    if (previous.status !== report.status || previous.failing.join() !== report.failing.join()) {
      const level = report.status === "SERVING" || this.#stopped ? "info" : "warn";
      this.#logger[level]({ status: report.status, failing: report.failing }, "health changed");
    }
    for (const name of this.#services) this.#impl.setStatus(name, report.status);
  }
}

/**
 * NATS: connected (not reconnecting), a round trip to the server, and
 * JetStream answering ($JS.API.INFO; it does not for a while after a server
 * restart). A frozen server fails it by the monitor's check timeout.
 */
export function natsCheck(nc: NatsConnection, name = "nats"): HealthCheck {
  return {
    name,
    check: async () => {
      if (!isNatsConnected(nc)) return false;
      await nc.flush();
      const reply = await nc.request("$JS.API.INFO", undefined, { timeout: JETSTREAM_CHECK_TIMEOUT_MS });
      return !reply.json<{ error?: unknown }>().error;
    },
  };
}

const JETSTREAM_CHECK_TIMEOUT_MS = 1_000;

/** PostgreSQL: a trivial query through the pool. */
export function postgresCheck(sql: Sql, name = "postgres"): HealthCheck {
  return {
    name,
    check: async () => {
      await sql`SELECT 1`;
      return true;
    },
  };
}

/** Redis: connected and answering (ioredis queues commands while reconnecting, hence the status test). */
export function redisCheck(redis: { status: string; ping(): Promise<string> }, name = "redis"): HealthCheck {
  return { name, check: async () => redis.status === "ready" && (await redis.ping()) === "PONG" };
}

/** A projection or reactor: healthy() false when halted or disconnected. */
export function consumerCheck(consumer: ManagedConsumer): HealthCheck {
  return { name: `consumer:${consumer.name}`, check: () => consumer.healthy() };
}
