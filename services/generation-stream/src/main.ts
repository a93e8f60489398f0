import { runService } from "@spool/kit";
import { loadGenConfig } from "./config.js";
import { startGenerationStream } from "./wiring.js";

runService("generation-stream", async (signal) => {
  const { app, logger } = await startGenerationStream(loadGenConfig(), { signal });
  return { logger, stop: (reason?: string) => app.stop(reason) };
});
