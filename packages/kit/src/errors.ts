// The domain error taxonomy. Errors are mapped to gRPC status codes once, at
// the gRPC edge (grpc/errors.ts); everything below it throws these.

export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "ABORTED"
  | "FAILED_PRECONDITION"
  | "RESOURCE_EXHAUSTED"
  | "UNAVAILABLE"
  | "DEADLINE_EXCEEDED"
  | "INTERNAL";

export interface FieldViolation {
  field: string;
  description: string;
}

/**
 * A typed detail for the caller (a google.protobuf.Any: the message's type URL
 * and its encoding), sent in the status details beside the field violations
 * and retry info, e.g. file-ingest's ArchiveRefusal.
 */
export interface ErrorDetail {
  /** "type.googleapis.com/" + the message's full name. */
  readonly typeUrl: string;
  readonly value: Uint8Array;
}

export class SpoolError extends Error {
  readonly code: ErrorCode;
  /** Typed details for the caller; never internal information. */
  details: readonly ErrorDetail[] = [];
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }

  /** This error with one more typed detail. */
  withDetail(detail: ErrorDetail): this {
    this.details = [...this.details, detail];
    return this;
  }
}

export class InvalidArgumentError extends SpoolError {
  readonly violations: readonly FieldViolation[];
  constructor(message: string, violations: readonly FieldViolation[] = []) {
    super("INVALID_ARGUMENT", message);
    this.violations = violations;
  }
}

export class UnauthenticatedError extends SpoolError {
  constructor(message = "authentication required") {
    super("UNAUTHENTICATED", message);
  }
}

export class PermissionDeniedError extends SpoolError {
  constructor(message = "permission denied") {
    super("PERMISSION_DENIED", message);
  }
}

export class NotFoundError extends SpoolError {
  constructor(message = "not found") {
    super("NOT_FOUND", message);
  }
}

export class AlreadyExistsError extends SpoolError {
  constructor(message = "already exists") {
    super("ALREADY_EXISTS", message);
  }
}

export class FailedPreconditionError extends SpoolError {
  constructor(message: string) {
    super("FAILED_PRECONDITION", message);
  }
}

export class ResourceExhaustedError extends SpoolError {
  /** How long the caller should wait before trying again, when known. */
  readonly retryAfterMs: number | undefined;
  constructor(message: string, retryAfterMs?: number) {
    super("RESOURCE_EXHAUSTED", message);
    this.retryAfterMs = retryAfterMs;
  }
}

export class UnavailableError extends SpoolError {
  /** How long the caller should wait before trying again, when known (the edge sends a default otherwise). */
  readonly retryAfterMs: number | undefined;
  constructor(message = "a dependency is unavailable", options?: ErrorOptions & { retryAfterMs?: number }) {
    super("UNAVAILABLE", message, options && "cause" in options ? { cause: options.cause } : undefined);
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/**
 * Optimistic concurrency conflict: the aggregate's subject moved on since it
 * was loaded (JetStream error 10071, wrong last subject sequence).
 */
export class ConcurrencyError extends SpoolError {
  readonly subject: string;
  readonly expectedSequence: number;
  constructor(subject: string, expectedSequence: number, options?: ErrorOptions) {
    super(
      "ABORTED",
      `concurrent modification of ${subject} (expected last sequence ${expectedSequence})`,
      options,
    );
    this.subject = subject;
    this.expectedSequence = expectedSequence;
  }
}

export function isSpoolError(e: unknown): e is SpoolError {
  return e instanceof SpoolError;
}
