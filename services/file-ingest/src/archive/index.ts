// The archive expander: see archive.ts for the contract, docs/SECURITY.md
// "file-ingest: archives" for the rules.
export * from "./archive.js";
export { archiveLimitsConfigShape, archiveLimitsFromConfig } from "./config.js";
export { expandArchive } from "./expand.js";
