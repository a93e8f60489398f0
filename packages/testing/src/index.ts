export * from "./decider-spec.js";
export * from "./grpc.js";
export * from "./infra.js";
export * from "./isolation.js";
export * from "./private-servers.js";
export * from "./process.js";
export * from "./tls-certificates.js";
export * from "./vitest.js";
