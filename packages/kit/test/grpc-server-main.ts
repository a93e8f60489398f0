// A service main.ts as the kit intends them: wiring only. Run as a child
// process by shutdown.int.test.ts (SIGTERM while a slow call is in flight).
import { Redis } from "ioredis";
import { baseConfigShape, loadConfig } from "../src/config.js";
import { DeadLetterStore } from "../src/dead-letters.js";
import { allowAllAdminCalls } from "../src/grpc/admin-service.js";
import { createGrpcServer, grpcOptionsFromConfig } from "../src/grpc/app.js";
import { natsCheck, postgresCheck, redisCheck } from "../src/grpc/health.js";
import { runService } from "../src/grpc/run-service.js";
import { createLogger } from "../src/logger.js";
import { createMetricsRegistry, startMetricsServer } from "../src/metrics.js";
import { connectNats } from "../src/nats.js";
import { createPool } from "../src/postgres.js";
import { FakeConsumer } from "./grpc-fakes.js";
import { newRecord, ProbeService, probeService } from "./grpc-probe.js";

runService("grpc-test", async () => {
  const config = loadConfig(baseConfigShape);
  const logger = createLogger({ service: "grpc-test", level: config.LOG_LEVEL });
  const metrics = createMetricsRegistry({ service: "grpc-test" });
  const app = createGrpcServer({ name: "grpc-test", logger, metrics, ...grpcOptionsFromConfig(config) });

  const metricsServer = await startMetricsServer({
    registry: metrics,
    port: config.METRICS_PORT,
    host: config.GRPC_HOST,
    ready: () => app.health.current.status === "SERVING",
  });
  // Registered first, closed last: scrapes work while the rest shuts down.
  app.onClose("metrics", () => metricsServer.close());

  const sql = createPool({ url: config.DATABASE_URL, max: 2 });
  app.onClose("postgres", () => sql.end({ timeout: 5 })).addHealthCheck(postgresCheck(sql));

  const redis = new Redis(config.REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  app.onClose("redis", () => redis.quit()).addHealthCheck(redisCheck(redis));

  const nc = await connectNats({ url: config.NATS_URL, name: "grpc-test" });
  app.onClose("nats", () => nc.drain()).addHealthCheck(natsCheck(nc));

  const deadLetters = new DeadLetterStore(sql);
  await deadLetters.migrate();
  app.addConsumer(new FakeConsumer({ name: "orders", deadLetters }));

  app.addService(ProbeService, probeService(newRecord()));
  app.addAdminService({ deadLetters, authorize: allowAllAdminCalls });
  await app.start();
  // The test signals this process directly, not the tsx wrapper around it.
  logger.info({ metricsPort: metricsServer.port, pid: process.pid }, "metrics listening");
  return app;
});
