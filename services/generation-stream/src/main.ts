import { ConfigError, EXIT_CONFIG, runService, runWorkers } from "@spool/kit";
import { type GenConfig, loadGenConfig } from "./config.js";
import { startGenerationStream } from "./wiring.js";

let config: GenConfig;
try {
  config = loadGenConfig();
} catch (e) {
  if (!(e instanceof ConfigError)) throw e;
  process.stderr.write(`generation-stream: ${e.message}\n`);
  process.exit(EXIT_CONFIG);
}

// SPOOL_WORKERS > 1: that many cluster workers, each a full replica on the shared gRPC port
// (docs/adr/0009-generation-stream-multicore.md); each gets its own metrics port (METRICS_PORT + index).
runWorkers(
  "generation-stream",
  {
    workers: config.WORKERS,
    envOf: (i) => (config.METRICS_PORT > 0 ? { SPOOL_METRICS_PORT: String(config.METRICS_PORT + i) } : {}),
  },
  () =>
    runService("generation-stream", async (signal) => {
      const { app, logger } = await startGenerationStream(loadGenConfig(), { signal });
      return { logger, stop: (reason?: string) => app.stop(reason) };
    }),
);
