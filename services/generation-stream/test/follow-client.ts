// A FollowGeneration call as a test sees it: every item received, and how the stream ended.
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import type {
  FollowGenerationRequest,
  FollowGenerationResponse,
  GenerationEvent,
  GenerationServiceClient,
} from "@spool/proto/spool/generation/v1/generation.js";
import type { TranscriptItem } from "@spool/transcript";
import { bearer } from "./harness.js";

export interface FollowEnd {
  /** "end": the server ended it (after the terminal event); "error": with `error`; "cancelled": by us. */
  how: "end" | "error" | "cancelled";
  error: ServiceError | undefined;
  /** When it ended (Date.now()). */
  at: number;
}

export interface OpenFollow {
  items: TranscriptItem[];
  events(): GenerationEvent[];
  lastSequence(): number;
  /** Resolves when the first event (or snapshot) arrives. */
  firstItem: Promise<void>;
  done: Promise<FollowEnd>;
  cancel(): void;
}

export function openFollow(
  client: GenerationServiceClient,
  request: Partial<FollowGenerationRequest> & { generationId: string },
  token: string | undefined,
  onItem?: (item: TranscriptItem, follow: OpenFollow) => void,
): OpenFollow {
  const items: TranscriptItem[] = [];
  const s = client.followGeneration(
    { afterSequence: 0n, ...request },
    token ? bearer(token) : new Metadata(),
  );
  let first!: () => void;
  const firstItem = new Promise<void>((r) => (first = r));
  const follow: OpenFollow = {
    items,
    events: () => items.flatMap((i) => (i.$case === "event" ? [i.value] : [])),
    lastSequence: () => {
      for (let i = items.length - 1; i >= 0; i--) {
        const item = items[i];
        if (item?.$case === "event") return Number(item.value.sequence);
        if (item?.$case === "snapshot") return Number(item.value.sequence);
      }
      return Number(request.afterSequence ?? 0n);
    },
    firstItem,
    done: new Promise<FollowEnd>((resolve) => {
      s.on("end", () => resolve({ how: "end", error: undefined, at: Date.now() }));
      s.on("error", (e: ServiceError) =>
        resolve({ how: e.code === status.CANCELLED ? "cancelled" : "error", error: e, at: Date.now() }),
      );
    }),
    cancel: () => s.cancel(),
  };
  s.on("data", (r: FollowGenerationResponse) => {
    if (!r.item || r.item.$case === "heartbeat") return;
    items.push(r.item);
    first();
    onItem?.(r.item, follow);
  });
  return follow;
}

/** The text of the deltas (and a snapshot) received, in order. */
export function textOf(items: readonly TranscriptItem[]): string {
  return items
    .map((i) =>
      i.$case === "snapshot"
        ? i.value.text
        : i.$case === "event" && i.value.event?.$case === "delta"
          ? i.value.event.value.text
          : "",
    )
    .join("");
}
