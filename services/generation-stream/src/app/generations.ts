import { createHash } from "node:crypto";
import {
  aggregate,
  ConcurrencyError,
  type EventStore,
  FailedPreconditionError,
  FOLLOW_SCOPE,
  NotFoundError,
  type Principal,
} from "@spool/kit";
import type { GenerationRequested as Requested } from "@spool/proto/spool/generation/v1/events.js";
import {
  GenerationStatus,
  type Message,
  type Parameters,
  type ToolChoice,
  type ToolDefinition,
} from "@spool/proto/spool/generation/v1/generation.js";
import { Subjects } from "../domain/events.js";
import {
  decideCancel,
  decideRequest,
  type Existing,
  type Generation,
  GenerationAggregate,
} from "../domain/generation.js";
import type { UserLimits } from "../limits/user-limits.js";
import { checkFiles, type FileCheckDeps } from "./file-check.js";
import { completeLifecycle, hasTerminal, releaseSlot, settleThroughOutput, terminalEvent } from "./finish.js";
import type { OutputLog } from "./output-log.js";

export interface StartInput {
  clientRequestId: string;
  model: string;
  messages: Message[];
  parameters: Parameters | undefined;
  toolIds: string[];
  fileIds: string[];
  conversationId: string;
  tools?: ToolDefinition[];
  toolChoice?: ToolChoice | undefined;
}

const ID = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * Generations: start (idempotent per user and client request id, within the
 * per-user limits), cancel (idempotent), and access checks. Starting writes
 * the request to GEN and `created` (sequence 1) to the output subject.
 */
export class Generations {
  readonly #store: EventStore;
  readonly #generations;
  readonly #output: OutputLog;
  readonly #limits: UserLimits;

  /** Absent: file attachments are off (SPOOL_FILES_ENABLED), and a start naming files is refused. */
  readonly #files: FileCheckDeps | undefined;

  constructor(deps: { store: EventStore; output: OutputLog; limits: UserLimits; files?: FileCheckDeps }) {
    this.#store = deps.store;
    this.#files = deps.files;
    this.#generations = aggregate(deps.store, GenerationAggregate);
    this.#output = deps.output;
    this.#limits = deps.limits;
  }

  /**
   * Starts a generation or returns the one this client request id already
   * started. The generation id is derived from the caller and the client
   * request id, so parallel starts of the same id race on one subject, whose
   * first event (expected sequence 0) decides; they also reserve the same
   * per-user slot, so limits count each generation once. The input's shape
   * was checked at the edge (generationRules, grpc/generation-service.ts).
   */
  async start(caller: Principal, input: StartInput): Promise<{ generation: Existing; created: boolean }> {
    const generationId = createHash("sha256")
      .update(`${caller.subject}\n${input.clientRequestId}`)
      .digest("base64url")
      .slice(0, 22);
    const known = await this.load(generationId);
    if (known.kind !== "none") return { generation: known, created: false };
    if (input.fileIds.length > 0) {
      if (!this.#files)
        throw new FailedPreconditionError("file attachments are not enabled on this deployment");
      // Before the slot: a refused start takes nothing.
      await checkFiles(this.#files, caller, input.fileIds);
    }
    await this.#limits.reserve(caller.subject, generationId);
    const request: Requested = {
      generationId,
      orgId: caller.orgId,
      ownerId: caller.subject,
      clientRequestId: input.clientRequestId,
      model: input.model,
      messages: input.messages,
      parameters: input.parameters,
      toolIds: input.toolIds,
      fileIds: input.fileIds,
      conversationId: input.conversationId,
      tools: input.tools ?? [],
      toolChoice: input.toolChoice,
    };
    try {
      return await this.#create(request, caller.subject);
    } catch (e) {
      await releaseSlot(this.#limits, caller.subject, generationId).catch(() => {});
      throw e;
    }
  }

  /**
   * Writes the request, then `created` if the output is still empty: a
   * producer claiming the generation (or a cancel) in between writes
   * `created` itself first (OutputLog.ensureCreated), so every output starts
   * with it. Repeating this (after a crash between the two) completes it.
   */
  async #create(request: Requested, actor: string): Promise<{ generation: Existing; created: boolean }> {
    const result = await this.#generations.handle(
      request.generationId,
      (state) => decideRequest(state, request),
      { actor },
    );
    if (result.state.kind === "none") throw new Error("generation was not created");
    // From the request that won (a parallel start of the same id may have carried another).
    await this.#output.ensureCreated(request.generationId, result.state.request);
    return { generation: result.state, created: result.events.length > 0 };
  }

  async load(generationId: string): Promise<Generation> {
    if (!ID.test(generationId)) return { kind: "none" };
    return (await this.#generations.load(generationId)).state;
  }

  /**
   * The generation if the caller may see it: its owner, an owner/admin of its
   * organisation, or a service token of the organisation with the follow
   * scope. Anything else is NOT_FOUND, so ids reveal nothing.
   */
  async visible(caller: Principal, generationId: string): Promise<Existing> {
    const g = await this.load(generationId);
    if (g.kind === "none" || !canSee(caller, g)) throw new NotFoundError("generation not found");
    return g;
  }

  /**
   * GetGeneration: the generation as visible to the caller. The output's
   * terminal event is written before the lifecycle's finish (finish.ts), so a
   * client that followed the output to its end could otherwise still read the
   * generation as running; when the output has ended, the lifecycle is
   * completed from it first (idempotent; the same repair every writer makes).
   */
  async get(caller: Principal, generationId: string): Promise<Existing> {
    const g = await this.visible(caller, generationId);
    if (g.kind === "finished" || !(await this.#output.hasEnded(generationId))) return g;
    const at = await this.#output.position(generationId);
    if (hasTerminal(at)) await completeLifecycle(this.#store, generationId, at, "get-generation");
    return this.visible(caller, generationId);
  }

  /**
   * Idempotent. A queued generation ends here: `cancelled` goes to its output
   * (after `created`), then the lifecycle records the request and the end
   * (finish.ts) — a producer claiming it meanwhile is fenced by that terminal
   * event, or, if its `started` landed first, ended by it. A running one's
   * cancel request is recorded and its producer stops and writes the
   * terminal event. Only the queued case reads the output subject, so a
   * cancel costs the same whatever a running generation has produced.
   */
  async cancel(caller: Principal, generationId: string): Promise<Existing> {
    await this.visible(caller, generationId);
    const subject = Subjects.generation(generationId);
    for (;;) {
      const { state } = await this.#generations.load(generationId);
      if (state.kind === "queued") {
        await settleThroughOutput(
          { store: this.#store, output: this.#output },
          generationId,
          state.request,
          () =>
            terminalEvent(GenerationStatus.GENERATION_STATUS_CANCELLED, {
              promptTokens: 0n,
              completionTokens: 0n,
            }),
          { name: "cancel", actor: caller.subject, cancelledBy: caller.subject },
        );
        await releaseSlot(this.#limits, state.request.ownerId, generationId);
        return this.visible(caller, generationId);
      }
      let result: { state: Generation };
      try {
        result = await this.#generations.handle(
          generationId,
          (current) => {
            // Re-queued since we looked: a queued generation is ended through its output (above).
            if (current.kind === "queued") throw new ConcurrencyError(subject, -1);
            return decideCancel(current, caller.subject);
          },
          { actor: caller.subject, maxAttempts: 1 },
        );
      } catch (e) {
        if (e instanceof ConcurrencyError) continue;
        throw e;
      }
      const g = result.state;
      if (g.kind === "none") throw new NotFoundError("generation not found");
      return g;
    }
  }
}

export function canSee(caller: Principal, g: Existing): boolean {
  if (caller.orgId !== g.request.orgId) return false;
  if (caller.kind === "user") {
    return caller.subject === g.request.ownerId || caller.roles.some((r) => r === "owner" || r === "admin");
  }
  return caller.scopes.some((s) => s === FOLLOW_SCOPE);
}
