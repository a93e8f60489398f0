// spool.admin.v1.AdminService, served by every service over its own
// projections, reactors and dead letters.
import {
  type AdminServiceServer,
  AdminServiceService,
  type DeadLetter as DeadLetterMessage,
  type GetProjectionRequest,
  type GetProjectionResponse,
  type ListDeadLettersRequest,
  type ListDeadLettersResponse,
  type ListProjectionsResponse,
  ProjectionState,
  type ProjectionStatus,
  type RebuildProjectionRequest,
  type RebuildProjectionResponse,
  type ReplayDeadLetterRequest,
  type ReplayDeadLetterResponse,
} from "@spool/proto/spool/admin/v1/admin.js";
import type { DeadLetter, DeadLetterStore } from "../dead-letters.js";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "../errors.js";
import type { ConsumerState, ConsumerStatus, ManagedConsumer } from "../managed.js";
import { checkRequest, type RequestRules, rule } from "../request-rules.js";
import type { CallContext } from "./context.js";
import { type AdapterOptions, type AsyncService, toGrpcHandlers } from "./handlers.js";

/** The projections and reactors a process runs, by name. */
export class ConsumerRegistry {
  readonly #byName = new Map<string, ManagedConsumer>();

  add(consumer: ManagedConsumer): this {
    if (this.#byName.has(consumer.name)) throw new Error(`consumer ${consumer.name} is already registered`);
    this.#byName.set(consumer.name, consumer);
    return this;
  }

  get(name: string): ManagedConsumer | undefined {
    return this.#byName.get(name);
  }

  list(): ManagedConsumer[] {
    return [...this.#byName.values()];
  }
}

/**
 * Decides whether a caller may use an admin RPC; throws UnauthenticatedError
 * or PermissionDeniedError to refuse. Required, so no service exposes
 * rebuilds and replays by omission.
 */
export type AdminAuthorizer = (ctx: CallContext, rpc: AdminRpc) => void | Promise<void>;
export type AdminRpc =
  | "ListProjections"
  | "GetProjection"
  | "RebuildProjection"
  | "ListDeadLetters"
  | "ReplayDeadLetter";

/**
 * Lets every caller in. Only until token verification exists in the kit; a
 * service passing it in production has no admin protection at all.
 */
export const allowAllAdminCalls: AdminAuthorizer = () => {};

export interface AdminServiceOptions {
  consumers: ConsumerRegistry;
  deadLetters: DeadLetterStore;
  authorize: AdminAuthorizer;
}

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;
const MAX_NAME_CHARS = 256;
const MAX_TOKEN_CHARS = 512;

const nameRequired = rule.check((name: string) => (name === "" ? "required" : undefined));

/** What each request must be, checked once the caller is authorized (as `guarded()` does for services). */
export const adminRules: RequestRules<typeof AdminServiceService> = {
  listProjections: {},
  getProjection: { name: nameRequired },
  rebuildProjection: { name: nameRequired },
  listDeadLetters: {
    pageSize: rule.check((n: number) =>
      n < 0 || n > MAX_PAGE_SIZE
        ? `must be between 1 and ${MAX_PAGE_SIZE} (0 for ${DEFAULT_PAGE_SIZE})`
        : undefined,
    ),
    consumer: rule.check((c: string) =>
      c.length > MAX_NAME_CHARS ? `at most ${MAX_NAME_CHARS} characters` : undefined,
    ),
  },
  replayDeadLetter: { id: nameRequired },
};

export class AdminService implements AsyncService<typeof AdminServiceService> {
  readonly #o: AdminServiceOptions;

  constructor(options: AdminServiceOptions) {
    this.#o = options;
  }

  async listProjections(_request: unknown, ctx: CallContext): Promise<ListProjectionsResponse> {
    await this.#o.authorize(ctx, "ListProjections");
    const consumers = this.#o.consumers.list();
    const results = await Promise.allSettled(consumers.map((c) => c.status()));
    const projections = results.map((r, i) => {
      if (r.status === "fulfilled") return toProjectionStatus(r.value);
      // One consumer that cannot report must not hide the others.
      ctx.logger.warn({ err: r.reason, consumer: consumers[i]?.name }, "consumer status failed");
      return unknownStatus(consumers[i]?.name ?? "");
    });
    return { projections };
  }

  async getProjection(request: GetProjectionRequest, ctx: CallContext): Promise<GetProjectionResponse> {
    await this.#o.authorize(ctx, "GetProjection");
    checkRequest(adminRules.getProjection, request);
    const consumer = this.#consumer(request.name);
    return { projection: toProjectionStatus(await consumer.status()) };
  }

  async rebuildProjection(
    request: RebuildProjectionRequest,
    ctx: CallContext,
  ): Promise<RebuildProjectionResponse> {
    await this.#o.authorize(ctx, "RebuildProjection");
    checkRequest(adminRules.rebuildProjection, request);
    const consumer = this.#consumer(request.name);
    if (!consumer.rebuild) {
      throw new FailedPreconditionError(`${consumer.name} has no read model to rebuild`);
    }
    // A rebuild already running is the consumer's FailedPreconditionError, passed through.
    const { targetVersion } = await consumer.rebuild();
    ctx.logger.info({ consumer: consumer.name, targetVersion }, "projection rebuild started");
    return { targetVersion };
  }

  async listDeadLetters(request: ListDeadLettersRequest, ctx: CallContext): Promise<ListDeadLettersResponse> {
    await this.#o.authorize(ctx, "ListDeadLetters");
    checkRequest(adminRules.listDeadLetters, request);
    const limit = request.pageSize || DEFAULT_PAGE_SIZE;
    const filter: PageFilter = { consumer: request.consumer, includeReplayed: request.includeReplayed };
    const cursor = request.pageToken === "" ? undefined : decodePageToken(request.pageToken, filter);
    const page = await this.#o.deadLetters.list({
      limit,
      includeReplayed: request.includeReplayed,
      ...(request.consumer ? { consumer: request.consumer } : {}),
      ...(cursor ? { cursor } : {}),
    });
    return {
      deadLetters: page.items.map(toDeadLetterMessage),
      nextPageToken: page.nextCursor ? encodePageToken(page.nextCursor, filter) : "",
    };
  }

  async replayDeadLetter(
    request: ReplayDeadLetterRequest,
    ctx: CallContext,
  ): Promise<ReplayDeadLetterResponse> {
    await this.#o.authorize(ctx, "ReplayDeadLetter");
    checkRequest(adminRules.replayDeadLetter, request);
    const store = this.#o.deadLetters;
    const entry = await store.get(request.id);
    if (!entry) throw new NotFoundError(`dead letter ${request.id} not found`);
    if (entry.replayedAt) throw new FailedPreconditionError(`dead letter ${entry.id} was already replayed`);
    // A rebuild's dead letters are recorded as "<projection>@v<N>" until its swap.
    const consumer = this.#o.consumers.get(entry.consumer.split("@")[0] ?? entry.consumer);
    if (!consumer) {
      throw new FailedPreconditionError(`consumer ${entry.consumer} does not run in this service`);
    }
    try {
      await consumer.replay(entry);
    } catch (e) {
      if ((await store.get(entry.id))?.replayedAt) {
        throw new FailedPreconditionError(`dead letter ${entry.id} was already replayed`);
      }
      await store.recordReplayFailure(entry.id, e instanceof Error ? e.message : String(e));
      ctx.logger.warn(
        { err: e, deadLetter: entry.id, consumer: entry.consumer },
        "dead letter replay failed",
      );
      throw new FailedPreconditionError(
        `replay of dead letter ${entry.id} failed; its error and attempts were updated (see ListDeadLetters)`,
      );
    }
    // Consumers mark it in the transaction that applied the event; this covers those that do not.
    await store.markReplayed(entry.id);
    return { deadLetter: toDeadLetterMessage((await store.get(entry.id)) ?? entry) };
  }

  #consumer(name: string): ManagedConsumer {
    const consumer = this.#o.consumers.get(name);
    if (!consumer) throw new NotFoundError(`projection ${name.slice(0, MAX_NAME_CHARS)} not found`);
    return consumer;
  }
}

/** The admin service as grpc-js handlers (what `server.addService(AdminServiceService, …)` takes). */
export function adminServiceHandlers(
  options: AdminServiceOptions,
  adapter: AdapterOptions,
): AdminServiceServer {
  return toGrpcHandlers(AdminServiceService, new AdminService(options), adapter);
}

function invalid(field: string, description: string): InvalidArgumentError {
  return new InvalidArgumentError(`${field}: ${description}`, [{ field, description }]);
}

interface PageFilter {
  consumer: string;
  includeReplayed: boolean;
}

/**
 * The token carries the keyset cursor and the filters it was issued for, so a
 * token reused with other filters is refused instead of paging something else.
 */
function encodePageToken(cursor: string, filter: PageFilter): string {
  const body = { v: 1, after: cursor, consumer: filter.consumer, replayed: filter.includeReplayed };
  return Buffer.from(JSON.stringify(body)).toString("base64url");
}

function decodePageToken(token: string, filter: PageFilter): string {
  const bad = () => invalid("page_token", "not a token from a previous response with the same filters");
  if (token.length > MAX_TOKEN_CHARS || !/^[A-Za-z0-9_-]+$/.test(token)) throw bad();
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw bad();
  }
  if (
    typeof body !== "object" ||
    body === null ||
    !("v" in body && body.v === 1) ||
    !("after" in body && typeof body.after === "string" && /^\d{1,19}$/.test(body.after)) ||
    !("consumer" in body && body.consumer === filter.consumer) ||
    !("replayed" in body && body.replayed === filter.includeReplayed)
  ) {
    throw bad();
  }
  return body.after;
}

const STATES: Record<ConsumerState, ProjectionState> = {
  running: ProjectionState.PROJECTION_STATE_RUNNING,
  rebuilding: ProjectionState.PROJECTION_STATE_REBUILDING,
  halted: ProjectionState.PROJECTION_STATE_HALTED,
  stopped: ProjectionState.PROJECTION_STATE_STOPPED,
  standby: ProjectionState.PROJECTION_STATE_STANDBY,
};

export function toProjectionStatus(s: ConsumerStatus): ProjectionStatus {
  return {
    name: s.name,
    stream: s.stream,
    state: STATES[s.state] ?? ProjectionState.PROJECTION_STATE_UNSPECIFIED,
    checkpoint: u64(s.checkpoint),
    head: u64(s.head),
    lag: u64(s.lag),
    version: Math.max(0, Math.trunc(s.version)),
    strict: s.strict,
    deadLetters: u64(s.deadLetters),
    lastError: safeErrorText(s.lastError ?? ""),
    rebuild: s.rebuild
      ? {
          targetVersion: Math.max(0, Math.trunc(s.rebuild.targetVersion)),
          applied: u64(s.rebuild.applied),
          head: u64(s.rebuild.head),
          startedAtMs: BigInt(s.rebuild.startedAt.getTime()),
        }
      : undefined,
  };
}

function unknownStatus(name: string): ProjectionStatus {
  return {
    name,
    stream: "",
    state: ProjectionState.PROJECTION_STATE_UNSPECIFIED,
    checkpoint: 0n,
    head: 0n,
    lag: 0n,
    version: 0,
    strict: false,
    deadLetters: 0n,
    lastError: "status unavailable",
    rebuild: undefined,
  };
}

export function toDeadLetterMessage(d: DeadLetter): DeadLetterMessage {
  return {
    id: d.id,
    consumer: d.consumer,
    stream: d.stream,
    streamSequence: u64(d.streamSequence),
    subject: d.subject,
    eventType: d.eventType,
    attempts: Math.max(0, Math.trunc(d.attempts)),
    error: safeErrorText(d.error),
    failedAtMs: BigInt(d.failedAt.getTime()),
    replayedAtMs: d.replayedAt ? BigInt(d.replayedAt.getTime()) : 0n,
  };
}

function u64(n: number): bigint {
  return Number.isFinite(n) && n > 0 ? BigInt(Math.trunc(n)) : 0n;
}

// Absolute file paths (stack frames, module paths) and file: URLs.
const SERVER_PATH = /(?:file:\/\/)?(?:\/[\w.@+-]+){2,}|[A-Za-z]:\\[^\s:]+/g;

/** Error text recorded by consumers, made fit for a response: no server paths, bounded. */
export function safeErrorText(text: string): string {
  return text.replace(SERVER_PATH, "<path>").slice(0, 1000);
}
