export * from "./command.js";
export * from "./config.js";
export * from "./errors.js";
export * from "./event-store.js";
export * from "./events.js";
export * from "./logger.js";
export * from "./namespace.js";
export * from "./nats.js";
