// The transcript digest of spool.generation.v1 (TranscriptDigest), defined
// once: writers of a generation's terminal event compute it with
// RunningTextDigest, and clients (the CLI, tests, anyone) check what they
// assembled with TranscriptVerifier. The byte-level definition is in the
// proto's comments and docs/API.md ("Verifying a transcript").
import { createHash, type Hash } from "node:crypto";
import type {
  FollowGenerationResponse,
  GenerationEvent,
  Snapshot,
} from "@spool/proto/spool/generation/v1/generation.js";

/**
 * SHA-256 over the UTF-8 bytes of each delta's text, in order, with nothing
 * between them. Immutable: `with` returns a new digest, so a writer's
 * position can be copied and retried without double-counting a delta.
 */
export class RunningTextDigest {
  readonly #hash: Hash;

  private constructor(hash: Hash) {
    this.#hash = hash;
  }

  static empty(): RunningTextDigest {
    return new RunningTextDigest(createHash("sha256"));
  }

  /** The digest after one more delta (or a snapshot's text). */
  with(text: string): RunningTextDigest {
    return new RunningTextDigest(this.#hash.copy().update(text, "utf8"));
  }

  /** The 32-byte SHA-256 so far (this digest stays usable). */
  digest(): Buffer {
    return this.#hash.copy().digest();
  }
}

/** One item a follower received: what FollowGenerationResponse carries (heartbeats are ignored). */
export type TranscriptItem = NonNullable<FollowGenerationResponse["item"]>;

export interface Verification {
  /** True only for a transcript ending with its terminal event whose digest matches everything before it. */
  verified: boolean;
  /** Why it did not verify (the first problem found). */
  problem: string | undefined;
  /** The assembled text (snapshot text and deltas). */
  text: string;
  /** Sequence of the last event taken. */
  lastSequence: number;
}

/**
 * Checks a transcript as it is received (add each item in order), so a
 * client following a long generation needs no copy of it: every sequence
 * from 1 (or the snapshot's) once and in order, then the terminal event's
 * TranscriptDigest against the count of deltas and the running hash.
 */
export class TranscriptVerifier {
  #next = 1;
  #digest = RunningTextDigest.empty();
  #outputEvents = 0;
  #text: string[] = [];
  #ended = false;
  #verified = false;
  #problem: string | undefined;
  #started = false;

  add(item: TranscriptItem): void {
    if (item.$case === "heartbeat") return;
    if (item.$case === "snapshot") this.#snapshot(item.value);
    else this.#event(item.value);
  }

  result(): Verification {
    const problem =
      this.#problem ?? (this.#ended ? undefined : "no terminal event: the transcript is incomplete");
    return {
      verified: problem === undefined && this.#verified,
      problem,
      text: this.#text.join(""),
      lastSequence: this.#next - 1,
    };
  }

  /** Records the first problem; returns false so a check can `return this.#fail(…)`. */
  #fail(problem: string): false {
    this.#problem ??= problem;
    return false;
  }

  #snapshot(s: Snapshot): boolean {
    if (this.#started) return this.#fail("a snapshot after other items");
    this.#started = true;
    this.#next = Number(s.sequence) + 1;
    this.#digest = this.#digest.with(s.text);
    this.#outputEvents = Number(s.outputEvents);
    this.#text.push(s.text);
    return true;
  }

  #event(e: GenerationEvent): boolean {
    this.#started = true;
    const sequence = Number(e.sequence);
    if (this.#ended) return this.#fail(`event ${sequence} after the terminal event`);
    if (sequence !== this.#next) {
      return this.#fail(
        sequence > this.#next
          ? `events ${this.#next} to ${sequence - 1} are missing`
          : `event ${sequence} is repeated or out of order (expected ${this.#next})`,
      );
    }
    this.#next = sequence + 1;
    const body = e.event;
    if (body?.$case === "delta") {
      this.#digest = this.#digest.with(body.value.text);
      this.#outputEvents++;
      this.#text.push(body.value.text);
    }
    if (body?.$case === "completed" || body?.$case === "failed" || body?.$case === "cancelled") {
      this.#ended = true;
      return this.#checkDigest(e, sequence);
    }
    return true;
  }

  #checkDigest(e: GenerationEvent, sequence: number): boolean {
    const t = e.transcript;
    if (!t) return this.#fail("the terminal event carries no transcript digest");
    if (Number(t.lastSequence) !== sequence)
      return this.#fail(
        `the digest names last sequence ${t.lastSequence}, the terminal event is ${sequence}`,
      );
    if (Number(t.outputEvents) !== this.#outputEvents)
      return this.#fail(
        `the digest counts ${t.outputEvents} output events, the transcript has ${this.#outputEvents}`,
      );
    if (!Buffer.from(t.textSha256).equals(this.#digest.digest()))
      return this.#fail("the text does not match the digest's SHA-256");
    this.#verified = true;
    return true;
  }
}

/** Verifies a whole transcript at once (see TranscriptVerifier). */
export function verifyTranscript(items: Iterable<TranscriptItem>): Verification {
  const v = new TranscriptVerifier();
  for (const item of items) v.add(item);
  return v.result();
}
