import { runService } from "@spool/kit";
import { loadFilesConfig } from "./config.js";
import { startFileIngest } from "./wiring.js";

runService("file-ingest", async (signal) => {
  const { app, logger } = await startFileIngest(loadFilesConfig(), { signal });
  return { logger, stop: (reason?: string) => app.stop(reason) };
});
