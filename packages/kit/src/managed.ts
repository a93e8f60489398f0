import type { DeadLetter } from "./dead-letters.js";

/**
 * What the admin service and health checks need from a projection or a
 * reactor. Both implement it; a service registers each with its AdminRegistry.
 */
export type ConsumerState = "running" | "rebuilding" | "halted" | "stopped" | "standby";

export interface ConsumerStatus {
  name: string;
  stream: string;
  state: ConsumerState;
  /** Last stream sequence applied. */
  checkpoint: number;
  /** Last sequence of the source stream when read. */
  head: number;
  /** head - checkpoint (0 when caught up). */
  lag: number;
  /** Version of the tables serving reads (1 for reactors). */
  version: number;
  strict: boolean;
  deadLetters: number;
  lastError: string | undefined;
  rebuild: { targetVersion: number; applied: number; head: number; startedAt: Date } | undefined;
}

export interface ManagedConsumer {
  readonly name: string;
  status(): Promise<ConsumerStatus>;
  /** True while it can do its job: not halted (strict failure) and connected. */
  healthy(): boolean;
  /** Starts a rebuild; undefined for consumers that have no read model (reactors). */
  rebuild?(): Promise<{ targetVersion: number }>;
  /** Applies a dead-lettered message again (after a fix); throws if it still fails. */
  replay(entry: DeadLetter): Promise<void>;
}
