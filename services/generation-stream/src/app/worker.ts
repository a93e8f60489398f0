import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JsMsg,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { type EventStore, FailedPreconditionError, type Logger } from "@spool/kit";
import type { GenerationRequested as Requested } from "@spool/proto/spool/generation/v1/events.js";
import { FailureReason, ToolChoiceMode } from "@spool/proto/spool/generation/v1/generation.js";
import { Coalescer } from "../domain/coalescer.js";
import { GenerationRequested, GenerationRequeued, GenStreams, Subjects } from "../domain/events.js";
import { generationReducer, StaleLeaseError } from "../domain/generation.js";
import { attemptOf, mayRetry, type RetryPolicy, retryDelayMs } from "../domain/retry.js";
import type { UserLimits } from "../limits/user-limits.js";
import { type ModelProvider, type ModelRequest, type ModelRole, ProviderError } from "../providers/types.js";
import { watchCancel } from "./cancel-watch.js";
import { releaseSlot } from "./finish.js";
import type { OutputLog } from "./output-log.js";
import { type LeasePolicy, ProducerSession } from "./producer.js";

export interface WorkerOptions {
  store: EventStore;
  output: OutputLog;
  limits: Pick<UserLimits, "refresh" | "release">;
  logger: Logger;
  lease: LeasePolicy;
  /** Spool model name -> provider serving it. Models not listed are left for external producers. */
  providers: ReadonlyMap<string, ModelProvider>;
  /** Generations this replica runs at once. */
  maxConcurrent: number;
  coalesceWindowMs: number;
  coalesceMaxChars: number;
  /** Identifies this replica in leases. */
  replica: string;
  /** At shutdown, how long running generations may take to finish before they are left to their leases. */
  drainMs: number;
  /**
   * A provider failure that is transient and came before any output re-queues
   * the generation (recorded as GenerationRequeued) up to maxAttempts runs,
   * with backoff; the last one fails it as PROVIDER_UNAVAILABLE.
   */
  retry?: RetryPolicy;
}

/** SPOOL_GENERATION_MAX_ATTEMPTS, _RETRY_BACKOFF_MS, _RETRY_BACKOFF_MAX_MS defaults (config.ts). */
export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 3, backoffMs: 1_000, backoffMaxMs: 30_000 };

/**
 * Built-in producers. Replicas share one durable consumer on the lifecycle
 * subjects, so each queued (or re-queued) generation reaches one replica,
 * which claims it (the lease decides any race with external producers) and
 * runs it. The message is acked once the claim is settled: from then on the
 * lease, not the message, keeps the generation from being lost.
 */
export class GenerationWorker {
  readonly #o: WorkerOptions;
  readonly #running = new Map<string, AbortController>();
  #messages: ConsumerMessages | undefined;
  #loop: Promise<void> | undefined;
  /** No new work is taken. */
  #stopping = false;
  /** What still runs is aborted and left to its lease. */
  #stopped = false;

  constructor(options: WorkerOptions) {
    this.#o = options;
  }

  get running(): number {
    return this.#running.size;
  }

  async start(): Promise<void> {
    const { store } = this.#o;
    const stream = store.namespace.stream(GenStreams.GEN.name);
    const durable = store.namespace.consumer("gen_workers");
    const jsm = await store.manager();
    const config = {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(30_000),
      max_deliver: -1,
      filter_subject: store.namespace.subject(Subjects.generation.all),
    };
    try {
      await jsm.consumers.info(stream, durable);
    } catch (e) {
      if (!(e instanceof JetStreamApiError && e.code === JetStreamApiCodes.ConsumerNotFound)) throw e;
      await jsm.consumers.add(stream, { ...config, deliver_policy: DeliverPolicy.All });
    }
    const consumer = await store.js.consumers.get(stream, durable);
    this.#loop = (async () => {
      while (!this.#stopping) {
        try {
          this.#messages = await consumer.consume({ max_messages: 64 });
          for await (const m of this.#messages) await this.#onMessage(m);
        } catch (e) {
          if (this.#stopping) break;
          this.#o.logger.warn({ err: e }, "generation work feed interrupted; resuming");
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    })();
  }

  async #onMessage(m: JsMsg): Promise<void> {
    const events = this.#o.store.decode(m.info.stream, m);
    const wakes = events.some((e) => GenerationRequested.is(e) || GenerationRequeued.is(e));
    if (!wakes) {
      m.ack();
      return;
    }
    const generationId = Subjects.generation.idOf(this.#o.store.namespace.relative(m.subject));
    // The model decides who produces: a re-queue event does not carry it, so read it from the generation.
    const { state } = await this.#o.store.load(Subjects.generation(generationId), generationReducer);
    if (state.kind !== "queued" || !this.#o.providers.has(state.request.model)) {
      m.ack(); // running elsewhere, finished, or an external producer's model
      return;
    }
    const waitMs = state.retryAtMs - Date.now();
    if (waitMs > 0) {
      m.nak(waitMs); // re-queued after a provider failure: not before its backoff has passed
      return;
    }
    if (this.#running.size >= this.#o.maxConcurrent) {
      m.nak(250); // full here: let another replica (or this one, later) take it
      return;
    }
    let session: ProducerSession;
    try {
      session = await ProducerSession.claim(
        { store: this.#o.store, output: this.#o.output, policy: this.#o.lease },
        generationId,
        // Platform-internal: built-in workers serve every organisation.
        { kind: "platform", id: `builtin:${this.#o.replica}` },
      );
    } catch (e) {
      // Claimed elsewhere, cancelled, or finished: nothing for us.
      if (e instanceof FailedPreconditionError) m.ack();
      else m.nak(1_000);
      return;
    }
    m.ack();
    const provider = this.#o.providers.get(session.generation.request.model);
    if (!provider) {
      await session.fail(FailureReason.FAILURE_REASON_INVALID_REQUEST, "no provider serves this model");
      return;
    }
    const abort = new AbortController();
    this.#running.set(generationId, abort);
    void this.#run(session, provider, abort).finally(() => this.#running.delete(generationId));
  }

  async #run(session: ProducerSession, provider: ModelProvider, abort: AbortController): Promise<void> {
    const { request } = session.generation;
    const log = this.#o.logger.child({ generationId: session.generationId, epoch: session.epoch });
    let cancelled = false;
    let leaseLost = false;
    const stopWatch = watchCancel(this.#o.store, this.#o.logger, session.generationId, () => {
      cancelled = true;
      abort.abort();
    });
    // Renewed every third of the lease, one renewal at a time; a renewal retries transient NATS
    // errors while the lease lasts, so only a lost or lapsed lease stops the generation.
    const renewEvery = Math.max(250, Math.floor(this.#o.lease.leaseMs / 3));
    let renewing = true;
    let wake: () => void = () => {};
    const renewal = (async () => {
      while (renewing) {
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, renewEvery).unref();
        });
        if (!renewing || session.finished) return;
        try {
          await session.renew();
          await this.#o.limits.refresh(request.ownerId, session.generationId).catch(() => {});
        } catch (e) {
          if (!renewing || session.finished) return;
          log.warn({ err: e }, "lease lost");
          leaseLost = true;
          abort.abort();
          return;
        }
      }
    })();
    /** Something reached the output (or was about to): from then on the generation is never re-queued. */
    let produced = false;
    const coalescer = new Coalescer({
      windowMs: this.#o.coalesceWindowMs,
      maxChars: this.#o.coalesceMaxChars,
      emit: async (text) => void (await session.delta(text)),
    });
    try {
      for await (const chunk of provider.stream(modelRequest(request, abort.signal))) {
        if (chunk.kind !== "finish") produced = true;
        if (chunk.kind === "delta") await coalescer.push(chunk.text);
        else if (chunk.kind === "tool_call") {
          await coalescer.flush();
          await session.toolCall({
            callId: chunk.id,
            toolName: chunk.name,
            argumentsJson: chunk.argumentsJson,
          });
        } else if (chunk.kind === "usage") {
          await coalescer.flush();
          await session.usage({
            promptTokens: BigInt(chunk.promptTokens),
            completionTokens: BigInt(chunk.completionTokens),
          });
        }
      }
      await coalescer.flush();
      if (cancelled) await session.cancelled();
      else await session.complete();
    } catch (e) {
      if (leaseLost || this.#stopped || e instanceof StaleLeaseError) {
        // Not ours to end: another producer holds it, or this replica is going away and the
        // lease sweeper re-queues it (no output yet) or fails it (output already followed).
        coalescer.discard();
        log.warn({ leaseLost }, "generation left to its lease");
        return;
      }
      try {
        await coalescer.flush().catch(() => {});
        if (!cancelled && !produced && e instanceof ProviderError && e.retryable) {
          if (await this.#retryLater(session, e, log)) return;
          cancelled = !session.finished; // a cancel request came first: nothing was re-queued
        }
        if (session.finished) return; // given up: #retryLater failed it
        if (cancelled) await session.cancelled();
        else await session.fail(failureReason(e), e instanceof Error ? e.message : "generation failed");
      } catch (finishError) {
        if (finishError instanceof StaleLeaseError) {
          log.warn("generation left to its lease");
          return;
        }
        log.warn({ err: finishError }, "could not record the end of the generation; the lease sweeper will");
      }
    } finally {
      renewing = false;
      wake();
      await renewal;
      stopWatch();
      if (session.finished)
        await releaseSlot(this.#o.limits, request.ownerId, session.generationId).catch(() => {});
    }
  }

  /**
   * A transient provider failure before any output: re-queue the generation
   * with backoff (true), or, after its last attempt, fail it as
   * PROVIDER_UNAVAILABLE (false, session finished). False and unfinished: a
   * cancel request came first.
   */
  async #retryLater(session: ProducerSession, e: ProviderError, log: Logger): Promise<boolean> {
    const policy = this.#o.retry ?? DEFAULT_RETRY;
    const attempt = attemptOf(session.generation);
    const failure = { reason: failureReason(e), message: e.message, retryAfterMs: e.retryAfterMs };
    if (!mayRetry(attempt, policy)) {
      await session.fail(
        FailureReason.FAILURE_REASON_PROVIDER_UNAVAILABLE,
        `${e.message} (gave up after ${attempt} ${attempt === 1 ? "attempt" : "attempts"})`,
      );
      return false;
    }
    const delayMs = retryDelayMs(attempt, policy, e.retryAfterMs, Math.random());
    if (!(await session.requeue(attempt, failure, Date.now() + delayMs))) return false;
    log.warn(
      { attempt, delayMs, reason: e.reason, status: e.status },
      "provider failed before output; re-queued",
    );
    return true;
  }

  /**
   * Stops taking work, lets what runs finish for up to `drainMs`, then aborts
   * the rest, leaving each to its lease: the sweeper re-queues it (no output
   * yet) or fails it (output already followed).
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    await this.#messages?.close();
    await this.#loop;
    const deadline = Date.now() + this.#o.drainMs;
    while (this.#running.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    this.#stopped = true;
    for (const abort of this.#running.values()) abort.abort();
  }
}

/** The provider's view of a generation's request. */
export function modelRequest(request: Requested, signal: AbortSignal): ModelRequest {
  const p = request.parameters;
  const choice = request.toolChoice;
  const toolChoice = choice === undefined ? undefined : TOOL_CHOICE[choice.mode];
  return {
    model: request.model,
    messages: request.messages.map((m) => ({
      role: m.role as ModelRole,
      content: m.content,
      ...(m.toolCallId ? { toolCallId: m.toolCallId } : {}),
      ...(m.toolCalls.length > 0
        ? {
            toolCalls: m.toolCalls.map((c) => ({
              id: c.callId,
              name: c.toolName,
              argumentsJson: c.argumentsJson,
            })),
          }
        : {}),
    })),
    params: {
      ...(p?.temperature !== undefined ? { temperature: p.temperature } : {}),
      ...(p?.topP !== undefined ? { topP: p.topP } : {}),
      ...(p?.maxTokens !== undefined ? { maxTokens: p.maxTokens } : {}),
    },
    ...(request.tools.length > 0
      ? {
          tools: request.tools.map((t) => ({
            name: t.name,
            ...(t.description ? { description: t.description } : {}),
            // Checked to be a JSON object at the edge (tool-rules.ts).
            ...(t.parametersJson
              ? { parameters: JSON.parse(t.parametersJson) as Record<string, unknown> }
              : {}),
          })),
        }
      : {}),
    ...(toolChoice === undefined
      ? {}
      : { toolChoice: toolChoice === "function" ? { function: choice?.functionName ?? "" } : toolChoice }),
    signal,
  };
}

const TOOL_CHOICE: Record<ToolChoiceMode, "auto" | "none" | "required" | "function" | undefined> = {
  [ToolChoiceMode.TOOL_CHOICE_MODE_UNSPECIFIED]: undefined,
  [ToolChoiceMode.TOOL_CHOICE_MODE_AUTO]: "auto",
  [ToolChoiceMode.TOOL_CHOICE_MODE_NONE]: "none",
  [ToolChoiceMode.TOOL_CHOICE_MODE_REQUIRED]: "required",
  [ToolChoiceMode.TOOL_CHOICE_MODE_FUNCTION]: "function",
  [ToolChoiceMode.UNRECOGNIZED]: undefined,
};

function failureReason(e: unknown): FailureReason {
  if (!(e instanceof ProviderError)) return FailureReason.FAILURE_REASON_INTERNAL;
  const reason = e.reason;
  if (reason === "connect_timeout" || reason === "first_token_timeout" || reason === "idle_timeout") {
    return FailureReason.FAILURE_REASON_PROVIDER_TIMEOUT;
  }
  if (reason === "http_error" || reason === "protocol_error")
    return FailureReason.FAILURE_REASON_PROVIDER_ERROR;
  return FailureReason.FAILURE_REASON_INTERNAL;
}
