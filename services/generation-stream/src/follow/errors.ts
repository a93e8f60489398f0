import { SpoolError } from "@spool/kit";

/**
 * Events a follower needs are no longer in the log (the delivery stream's
 * retention removed them, or they were deleted): the follow cannot continue
 * without a gap, so it stops instead.
 */
export class FollowGapError extends SpoolError {
  /** First sequence that could not be read. */
  readonly missingFrom: number;
  /** Sequence found instead, when one was (undefined: nothing after the gap was found). */
  readonly found: number | undefined;
  constructor(subject: string, missingFrom: number, found?: number) {
    super(
      "FAILED_PRECONDITION",
      found === undefined
        ? `events of ${subject} from sequence ${missingFrom} are no longer stored`
        : `events of ${subject} from sequence ${missingFrom} to ${found - 1} are no longer stored`,
    );
    this.missingFrom = missingFrom;
    this.found = found;
  }
}

/** No event arrived within the follow's idle bound (FollowOptions.idleTimeoutMs). */
export class FollowTimeoutError extends SpoolError {
  readonly idleMs: number;
  constructor(subject: string, idleMs: number) {
    super("DEADLINE_EXCEEDED", `no event on ${subject} for ${idleMs} ms`);
    this.idleMs = idleMs;
  }
}
