// The process around a service: start it, stop it on SIGTERM/SIGINT, and turn
// every way of failing into a logged reason and a non-zero exit code, so
// main.ts stays a list of wiring steps.
import cluster from "node:cluster";
import { ConfigError } from "../config.js";
import { createLogger, type Logger } from "../logger.js";

export interface RunningService {
  readonly logger: Logger;
  stop(reason?: string): Promise<{ clean: boolean }>;
}

export interface RunServiceOptions {
  /** Exit anyway this long after the signal if stopping hangs (default 60 s). */
  hardTimeoutMs?: number;
  /** For tests; defaults to process.exit. */
  exit?: (code: number) => void;
  /**
   * Signals that stop the service (default SIGTERM and SIGINT; in a cluster
   * worker (runWorkers) SIGTERM only, SIGINT ignored: a terminal's Ctrl-C
   * reaches the whole process group, and the primary forwards it once).
   */
  stopSignals?: readonly NodeJS.Signals[];
}

/** EX_CONFIG from sysexits.h: the configuration is unusable, restarting will not help. */
export const EXIT_CONFIG = 78;

/**
 *   runService("auth", async () => {
 *     const config = loadConfig(schema);
 *     const app = createGrpcServer({...});
 *     ...
 *     await app.start();
 *     return app;
 *   });
 */
export function runService(
  name: string,
  /** `starting` aborts on SIGTERM/SIGINT before main resolves: pass it to whatever waits for dependencies. */
  main: (starting: AbortSignal) => Promise<RunningService>,
  options: RunServiceOptions = {},
): void {
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let logger: Logger | undefined;
  const log = () => (logger ??= createLogger({ service: name }));
  let service: RunningService | undefined;
  let signalled: NodeJS.Signals | undefined;
  const starting = new AbortController();

  const stop = async (signal: NodeJS.Signals) => {
    setTimeout(() => {
      log().error({ signal }, "shutdown did not finish in time; exiting");
      exit(1);
    }, options.hardTimeoutMs ?? 60_000).unref();
    if (!service) {
      // Still starting (perhaps waiting for a dependency): stop waiting; main settles soon.
      starting.abort(new StartAbortedError(signal));
      return;
    }
    try {
      const { clean } = await service.stop(`received ${signal}`);
      exit(clean ? 0 : 1);
    } catch (err) {
      log().error({ err }, "shutdown failed");
      exit(1);
    }
  };

  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      log().warn({ signal }, "second signal: exiting without waiting");
      exit(1);
      return;
    }
    signalled = signal;
    void stop(signal);
  };
  const stopSignals = options.stopSignals ?? (cluster.isWorker ? ["SIGTERM"] : ["SIGTERM", "SIGINT"]);
  for (const s of stopSignals) process.on(s, onSignal);
  if (!stopSignals.includes("SIGINT")) process.on("SIGINT", () => {});
  process.on("uncaughtException", (err) => {
    log().fatal({ err }, "uncaught exception");
    exit(1);
  });
  process.on("unhandledRejection", (err) => {
    log().fatal({ err }, "unhandled promise rejection");
    exit(1);
  });

  main(starting.signal).then(
    (started) => {
      service = started;
      logger = started.logger;
      // A signal that came while starting is honoured now that there is something to stop.
      if (signalled) void stop(signalled);
    },
    (err: unknown) => {
      if (err instanceof StartAbortedError) {
        // Asked to stop before it was serving: nothing to drain, and not a failure.
        log().info({ signal: err.signal }, "stopped during start-up");
        exit(0);
        return;
      }
      if (err instanceof ConfigError) {
        // Problems name variables, never values; a stack trace would add nothing.
        process.stderr.write(`${name}: ${err.message}\n`);
        exit(EXIT_CONFIG);
        return;
      }
      log().fatal({ err }, "failed to start");
      exit(1);
    },
  );
}

/** The reason start-up waits are aborted with when a signal arrives during start-up. */
export class StartAbortedError extends Error {
  readonly signal: NodeJS.Signals;
  constructor(signal: NodeJS.Signals) {
    super(`received ${signal} during start-up`);
    this.name = "StartAbortedError";
    this.signal = signal;
  }
}
