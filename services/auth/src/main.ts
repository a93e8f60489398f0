import { runService } from "@spool/kit";
import { loadAuthConfig } from "./config.js";
import { startAuth } from "./wiring.js";

runService("auth", async (signal) => {
  const config = loadAuthConfig();
  const { app, logger } = await startAuth(config, { signal });
  return { logger, stop: (reason?: string) => app.stop(reason) };
});
