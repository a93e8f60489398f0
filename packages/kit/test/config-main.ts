// A minimal service entry point: loads configuration and logs it, the way
// every main.ts starts. Used by config.int.test.ts to check start-up refusals.
import { z } from "zod";
import { baseConfigShape, loadConfig, secret } from "../src/config.js";
import { createLogger } from "../src/logger.js";

try {
  const config = loadConfig({
    ...baseConfigShape,
    UPSTREAM_URL: z.string().url(),
    API_KEY: secret(z.string().min(16)),
  });
  const logger = createLogger({ service: "config-main" });
  logger.info({ config }, "configuration loaded");
  logger.info(`calling upstream with key ${config.API_KEY}`);
  logger.info("ready");
} catch (e) {
  process.stderr.write(`${(e as Error).message}\n`);
  process.exit(78);
}
