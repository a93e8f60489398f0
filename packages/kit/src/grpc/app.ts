import {
  type ChannelOptions,
  Server,
  ServerCredentials,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { AdminServiceService } from "@spool/proto/spool/admin/v1/admin.js";
import type { Registry } from "prom-client";
import type { DeadLetterStore } from "../dead-letters.js";
import { UnavailableError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { ManagedConsumer } from "../managed.js";
import { type AdminAuthorizer, adminServiceHandlers, ConsumerRegistry } from "./admin-service.js";
import { type AsyncService, toGrpcHandlers } from "./handlers.js";
import { consumerCheck, HEALTH_SERVICE_NAME, type HealthCheck, HealthMonitor } from "./health.js";
import { grpcMetrics, serverInterceptor } from "./interceptor.js";
import { createReflection, fileDescriptorsOf, spoolDescriptorSets } from "./reflection.js";
import { toGrpcStatus } from "./status.js";

/** The health hold between listen() and start(). */
const STARTING = "starting";

export interface GrpcAppOptions {
  /** The service's name, for logs. */
  name: string;
  logger: Logger;
  host?: string;
  /** 0 picks a free port (tests). */
  port: number;
  /** Largest request message accepted; larger ones get RESOURCE_EXHAUSTED. */
  maxReceiveBytes: number;
  /** Largest response message sent (grpc-js has no limit by default). */
  maxSendBytes: number;
  /**
   * Largest request metadata (headers: authorization and the rest, counted
   * as an HTTP/2 header list) accepted; a larger call gets RESOURCE_EXHAUSTED
   * alone (default 16 KiB, see DEFAULT_MAX_METADATA_BYTES).
   */
  maxMetadataBytes?: number;
  /** How long in-flight calls may take to finish once shutdown begins. */
  shutdownGraceMs: number;
  /** Longest a unary call may run whatever the client's deadline (default 30 s). */
  maxUnaryMs?: number;
  /** Longest a streaming call may run (default unlimited: follow streams end with their client or at shutdown). */
  maxStreamMs?: number;
  /** Where gRPC metrics go; none when omitted. */
  metrics?: Registry;
  /**
   * FileDescriptorSets (`buf build` output) describing the served services,
   * for reflection; default: the one @spool/proto ships, if any.
   */
  descriptorSets?: readonly Uint8Array[];
  /** How often health checks run (default 1500 ms). */
  healthIntervalMs?: number;
  /** Each closer's time limit at shutdown (default 10 s). */
  closerTimeoutMs?: number;
  /** Extra grpc-js options, applied last. */
  serverOptions?: ChannelOptions;
}

/** The options of GrpcAppOptions that come from the shared configuration. */
export interface GrpcConfig {
  GRPC_HOST: string;
  GRPC_PORT: number;
  GRPC_MAX_RECEIVE_BYTES: number;
  GRPC_MAX_SEND_BYTES: number;
  SHUTDOWN_GRACE_MS: number;
  GRPC_MAX_UNARY_MS?: number;
  GRPC_MAX_METADATA_BYTES?: number;
}

export function grpcOptionsFromConfig(
  config: GrpcConfig,
): Pick<
  GrpcAppOptions,
  "host" | "port" | "maxReceiveBytes" | "maxSendBytes" | "shutdownGraceMs" | "maxUnaryMs" | "maxMetadataBytes"
> {
  return {
    host: config.GRPC_HOST,
    port: config.GRPC_PORT,
    maxReceiveBytes: config.GRPC_MAX_RECEIVE_BYTES,
    maxSendBytes: config.GRPC_MAX_SEND_BYTES,
    shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
    ...(config.GRPC_MAX_UNARY_MS !== undefined ? { maxUnaryMs: config.GRPC_MAX_UNARY_MS } : {}),
    ...(config.GRPC_MAX_METADATA_BYTES !== undefined
      ? { maxMetadataBytes: config.GRPC_MAX_METADATA_BYTES }
      : {}),
  };
}

export interface StopResult {
  /** In-flight calls finished within the grace period and every closer succeeded. */
  clean: boolean;
  /** The grace period ran out and remaining calls were cancelled. */
  forced: boolean;
  failedClosers: string[];
}

interface Closer {
  name: string;
  close: () => unknown;
}

// Keepalive: find dead peers (half-open TCP behind NATed load balancers)
// within about a minute and a half, without chattering on healthy ones.
const KEEPALIVE: ChannelOptions = {
  "grpc.keepalive_time_ms": 60_000,
  "grpc.keepalive_timeout_ms": 20_000,
};

/** gRPC C-core's hard limit on request metadata; a token is ~1 KiB. */
export const DEFAULT_MAX_METADATA_BYTES = 16 * 1024;
/**
 * The largest header field HTTP/2's HPACK decoder in Node (nghttp2) accepts:
 * a field whose encoded length exceeds it is a COMPRESSION_ERROR, which
 * RFC 9113 §4.3 makes a connection error, so the server closes the whole
 * connection before any call (or this kit) sees the headers. No server
 * setting changes that; the header list size advertised below lets clients
 * that honour it (grpc-go, grpc-java, C-core) refuse such a call locally.
 */
export const HPACK_FIELD_CEILING = 64 * 1024;

/**
 * A gRPC server with the kit's interceptor, health, reflection and graceful
 * shutdown. Register services, checks, consumers and closers, then start().
 */
export class GrpcApp {
  readonly server: Server;
  readonly health: HealthMonitor;
  readonly consumers = new ConsumerRegistry();
  readonly logger: Logger;
  readonly #o: GrpcAppOptions;
  readonly #services: string[] = [];
  readonly #consumerStops: Closer[] = [];
  readonly #closers: Closer[] = [];
  readonly #stopping = new AbortController();
  #port: number | undefined;
  #listening: Promise<number> | undefined;
  /** Set by start(): until then registered services answer UNAVAILABLE (see listen()). */
  #started = false;
  #stopped: Promise<StopResult> | undefined;

  constructor(options: GrpcAppOptions) {
    this.#o = options;
    this.logger = options.logger;
    this.health = new HealthMonitor({
      logger: options.logger,
      ...(options.healthIntervalMs !== undefined ? { intervalMs: options.healthIntervalMs } : {}),
    });
    this.server = new Server({
      ...KEEPALIVE,
      "grpc.max_receive_message_length": options.maxReceiveBytes,
      "grpc.max_send_message_length": options.maxSendBytes,
      ...options.serverOptions,
      interceptors: [
        serverInterceptor({
          logger: options.logger,
          metrics: options.metrics ? grpcMetrics(options.metrics) : undefined,
          draining: () => this.#stopping.signal.aborted,
          maxUnaryMs: options.maxUnaryMs ?? 30_000,
          maxStreamMs: options.maxStreamMs ?? Number.POSITIVE_INFINITY,
          maxMetadataBytes: options.maxMetadataBytes ?? DEFAULT_MAX_METADATA_BYTES,
          quietMethods: new Set([`/${HEALTH_SERVICE_NAME}/Check`, `/${HEALTH_SERVICE_NAME}/Watch`]),
        }),
      ],
    });
  }

  /** The bound port, once started. */
  get port(): number {
    if (this.#port === undefined) throw new Error("the server is not started");
    return this.#port;
  }

  /**
   * Adds a service written as async methods of any kind (unary, server,
   * client or bidi streaming; see AsyncService); thrown SpoolErrors become
   * their gRPC status. Wrap it in guarded() for authentication.
   */
  addService<D extends ServiceDefinition>(definition: D, implementation: AsyncService<D>): this {
    const handlers = toGrpcHandlers(definition, implementation, {
      logger: this.logger,
      stopping: this.#stopping.signal,
    });
    return this.addGrpcService(definition, handlers);
  }

  /** Adds grpc-js handlers as they are; errors are the handler's business (prefer addService). */
  addGrpcService(definition: ServiceDefinition, handlers: UntypedServiceImplementation): this {
    // Reflection is fixed at start.
    if (this.#started) throw new Error("add services before start()");
    this.server.addService(definition, this.#untilStarted(handlers));
    const name = serviceName(definition);
    this.#services.push(name);
    this.health.addService(name);
    return this;
  }

  /** Serves spool.admin.v1.AdminService over this app's consumers. */
  addAdminService(options: { deadLetters: DeadLetterStore; authorize: AdminAuthorizer }): this {
    const handlers = adminServiceHandlers(
      { consumers: this.consumers, ...options },
      { logger: this.logger, stopping: this.#stopping.signal },
    );
    return this.addGrpcService(AdminServiceService, handlers);
  }

  addHealthCheck(check: HealthCheck): this {
    this.health.addCheck(check);
    return this;
  }

  /**
   * Registers a projection or reactor: listed by the admin service, part of
   * health, and stopped at shutdown when it has a stop() method.
   */
  addConsumer(consumer: ManagedConsumer & { stop?: () => Promise<void> }): this {
    this.consumers.add(consumer);
    this.health.addCheck(consumerCheck(consumer));
    const stop = consumer.stop;
    if (stop)
      this.#consumerStops.push({ name: `consumer ${consumer.name}`, close: () => stop.call(consumer) });
    return this;
  }

  /**
   * Runs at shutdown, after the gRPC server and then the consumers
   * (addConsumer) have stopped. Closers run in reverse order of registration,
   * like nested cleanups: register each resource when it is created, and
   * create the stores before NATS, so NATS drains first (a drain still
   * delivers pending messages, whose handlers need PostgreSQL and Redis).
   */
  onClose(name: string, close: () => unknown): this {
    this.#closers.push({ name, close });
    return this;
  }

  /**
   * Binds the port early and answers health, NOT_SERVING ("starting"), while
   * the service waits for its dependencies: probes and operators see it is
   * alive and not ready, instead of a refused connection. Services added
   * before start() answer UNAVAILABLE (with retry info) until then.
   */
  listen(): Promise<number> {
    this.#listening ??= (async () => {
      this.health.hold(STARTING);
      this.health.addToServer(this.server);
      this.#port = await this.#bind();
      this.health.start();
      this.logger.info({ port: this.#port }, "grpc server bound; NOT_SERVING until start-up completes");
      return this.#port;
    })();
    return this.#listening;
  }

  async start(): Promise<number> {
    const port = await this.listen();
    this.#addReflection();
    this.#started = true;
    this.health.release(STARTING);
    await this.health.refresh();
    this.logger.info(
      { port, services: this.#services, health: this.health.current.status },
      "grpc server listening",
    );
    return port;
  }

  /**
   * Stops accepting calls, lets in-flight ones finish within the grace period
   * (then cancels them), and runs the closers. Safe to call more than once.
   */
  stop(reason = "stop requested"): Promise<StopResult> {
    this.#stopped ??= this.#stop(reason);
    return this.#stopped;
  }

  async #stop(reason: string): Promise<StopResult> {
    this.logger.info({ reason, graceMs: this.#o.shutdownGraceMs }, "shutting down");
    this.#stopping.abort();
    this.health.stop();
    const forced = !(await this.#drain());
    const failedClosers = await this.#runClosers();
    const result = { clean: !forced && failedClosers.length === 0, forced, failedClosers };
    this.logger.info(result, "shut down");
    return result;
  }

  /** True when every call finished within the grace period. */
  #drain(): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.logger.warn("grace period over: cancelling calls still running");
        this.server.forceShutdown();
        resolve(false);
      }, this.#o.shutdownGraceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  async #runClosers(): Promise<string[]> {
    const failed: string[] = [];
    for (const closer of [...this.#closers, ...this.#consumerStops].reverse()) {
      try {
        await withTimeout(Promise.resolve().then(closer.close), this.#o.closerTimeoutMs ?? 10_000);
        this.logger.info({ closer: closer.name }, "closed");
      } catch (err) {
        failed.push(closer.name);
        this.logger.error({ err, closer: closer.name }, "closer failed");
      }
    }
    return failed;
  }

  /** Wraps each handler so it refuses calls with UNAVAILABLE until start(). */
  #untilStarted(handlers: UntypedServiceImplementation): UntypedServiceImplementation {
    const gated: UntypedServiceImplementation = {};
    for (const [name, handler] of Object.entries(handlers)) {
      const fn = handler as (call: unknown, callback?: (error: unknown) => void) => void;
      gated[name] = ((
        call: { emit(event: "error", error: unknown): void },
        callback?: (e: unknown) => void,
      ) => {
        if (this.#started) return fn(call, callback);
        const { code, details, metadata } = toGrpcStatus(new UnavailableError("the service is starting"));
        const error = { code, details, metadata };
        if (typeof callback === "function") callback(error);
        else call.emit("error", error);
      }) as UntypedServiceImplementation[string];
    }
    return gated;
  }

  #addReflection(): void {
    const sets = this.#o.descriptorSets ?? spoolDescriptorSets();
    const files = [...sets.flatMap(fileDescriptorsOf), ...HealthMonitor.fileDescriptorProtos()];
    const reflection = createReflection(files, [...this.#services, HEALTH_SERVICE_NAME]);
    if (reflection.missing.length > 0) {
      this.logger.warn(
        { services: reflection.missing },
        "no descriptors for these services: reflection cannot describe them",
      );
    }
    reflection.service.addToServer(this.server);
  }

  #bind(): Promise<number> {
    const address = `${this.#o.host ?? "0.0.0.0"}:${this.#o.port}`;
    return new Promise((resolve, reject) => {
      this.server.bindAsync(address, ServerCredentials.createInsecure(), (err, port) => {
        if (err) return reject(err);
        this.#advertiseHeaderListSize();
        resolve(port);
      });
    });
  }

  /**
   * Sends SETTINGS_MAX_HEADER_LIST_SIZE to every client. grpc-js has no
   * option for it (nor for grpc.max_metadata_size), so it goes to the HTTP/2
   * servers grpc-js created. Node then resets a stream whose header list is
   * larger (that call alone fails with RESOURCE_EXHAUSTED); smaller lists
   * over maxMetadataBytes get the interceptor's clearer RESOURCE_EXHAUSTED.
   */
  #advertiseHeaderListSize(): void {
    const limit = Math.max(this.#o.maxMetadataBytes ?? DEFAULT_MAX_METADATA_BYTES, HPACK_FIELD_CEILING);
    const servers = (this.server as unknown as { http2Servers?: Map<unknown, unknown> }).http2Servers;
    let advertised = 0;
    for (const s of servers?.keys() ?? []) {
      const update = (s as { updateSettings?: (settings: { maxHeaderListSize: number }) => void })
        .updateSettings;
      if (typeof update !== "function") continue;
      update.call(s, { maxHeaderListSize: limit });
      advertised++;
    }
    if (advertised === 0) {
      this.logger.warn("cannot advertise the HTTP/2 header list size (grpc-js internals changed)");
    }
  }
}

export function createGrpcServer(options: GrpcAppOptions): GrpcApp {
  return new GrpcApp(options);
}

/** "spool.admin.v1.AdminService" from a definition's method paths. */
export function serviceName(definition: ServiceDefinition): string {
  const first = Object.values(definition)[0];
  const match = first?.path.match(/^\/([^/]+)\//);
  if (!match?.[1]) throw new Error("a service definition needs at least one method");
  return match[1];
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
