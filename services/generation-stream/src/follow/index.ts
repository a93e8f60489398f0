export { FollowGapError, FollowTimeoutError } from "./errors.js";
export {
  type Decoded,
  type Decoder,
  FollowHub,
  type FollowHubOptions,
  type FollowHubStats,
  type FollowItem,
  type FollowOptions,
} from "./follow-hub.js";
export type { DirectDelivery, FollowEvent } from "./follower.js";
