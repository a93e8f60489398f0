export * from "./guard.js";
export * from "./jwks.js";
export * from "./principal.js";
export * from "./revocation-watch.js";
export * from "./revocations.js";
export * from "./scopes.js";
export * from "./streams.js";
export * from "./verifier.js";
