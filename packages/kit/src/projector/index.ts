export {
  type ApplyContext,
  defineProjection,
  type ProjectionDefinition,
  type TableNames,
  type TypedProjectionDefinition,
  tableNames,
} from "./definition.js";
export { FencedError, HaltedError } from "./errors.js";
export { PROJECTIONS_TABLE } from "./metadata.js";
export { Projector, type ProjectorOptions } from "./projector.js";
export {
  type RedisProjectionDefinition,
  RedisProjector,
  type RedisProjectorOptions,
} from "./redis-projector.js";
export { type ApplyWritesOptions, applyRedisWrites, type RedisWrite } from "./redis-writes.js";
export type {
  CommittedBatch,
  ProjectionSource,
  ProjectorMetrics,
  ProjectorTuning,
} from "./types.js";
