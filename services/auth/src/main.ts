import { runService } from "@spool/kit";
import { loadAuthConfig } from "./config.js";
import { startAuth } from "./wiring.js";

runService("auth", async () => {
  const config = loadAuthConfig();
  const { app, logger } = await startAuth(config);
  return { logger, stop: (reason?: string) => app.stop(reason) };
});
