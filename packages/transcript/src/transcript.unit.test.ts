import { createHash } from "node:crypto";
import type { GenerationEvent } from "@spool/proto/spool/generation/v1/generation.js";
import { describe, expect, it } from "vitest";
import { RunningTextDigest, type TranscriptItem, verifyTranscript } from "./index.js";

const deltas = ["Hello", ", wörld", " 👋", "", "!"];

function event(
  sequence: number,
  body: GenerationEvent["event"],
  transcript?: GenerationEvent["transcript"],
): TranscriptItem {
  return {
    $case: "event",
    value: { generationId: "g", sequence: BigInt(sequence), timeMs: 0n, event: body, transcript },
  };
}

/** created, started, the deltas, usage, completed with its digest (computed independently here). */
function transcript(): TranscriptItem[] {
  const items: TranscriptItem[] = [
    event(1, { $case: "created", value: { model: "m", conversationId: "" } }),
    event(2, { $case: "started", value: { epoch: 1n, producer: "builtin" } }),
  ];
  for (const text of deltas) items.push(event(items.length + 1, { $case: "delta", value: { text } }));
  items.push(
    event(items.length + 1, { $case: "usage", value: { usage: { promptTokens: 1n, completionTokens: 5n } } }),
  );
  const last = items.length + 1;
  items.push(
    event(
      last,
      { $case: "completed", value: { usage: undefined } },
      {
        lastSequence: BigInt(last),
        outputEvents: BigInt(deltas.length),
        textSha256: createHash("sha256")
          .update(Buffer.from(deltas.join(""), "utf8"))
          .digest(),
      },
    ),
  );
  return items;
}

describe("RunningTextDigest", () => {
  it("is the SHA-256 of the UTF-8 concatenation, and immutable", () => {
    const empty = RunningTextDigest.empty();
    const d = deltas.reduce((acc, t) => acc.with(t), empty);
    expect(d.digest().toString("hex")).toBe(createHash("sha256").update(deltas.join("")).digest("hex"));
    expect(empty.digest().toString("hex")).toBe(createHash("sha256").digest("hex"));
    // Reading the digest does not consume it.
    expect(d.digest()).toEqual(d.digest());
  });
});

describe("verifyTranscript", () => {
  it("the real transcript verifies, heartbeats or not", () => {
    const items = transcript();
    items.splice(3, 0, { $case: "heartbeat", value: { timeMs: 1n } });
    const v = verifyTranscript(items);
    expect(v).toMatchObject({ verified: true, problem: undefined, text: deltas.join(""), lastSequence: 9 });
  });

  it("one byte changed in a delta fails", () => {
    const items = transcript();
    const d = items[3];
    if (d?.$case !== "event" || d.value.event?.$case !== "delta") throw new Error("fixture");
    d.value.event.value.text = ", w\u00f6rle";
    expect(verifyTranscript(items)).toMatchObject({
      verified: false,
      problem: expect.stringMatching(/SHA-256/),
    });
  });

  it("one event dropped fails, renumbered or not", () => {
    const dropped = transcript();
    dropped.splice(4, 1);
    expect(verifyTranscript(dropped)).toMatchObject({
      verified: false,
      problem: "events 5 to 5 are missing",
    });
    // Renumbering the rest hides the gap, not the missing delta.
    const renumbered = transcript();
    renumbered.splice(4, 1);
    renumbered.forEach((item, i) => {
      if (item.$case === "event") item.value.sequence = BigInt(i + 1);
    });
    expect(verifyTranscript(renumbered).verified).toBe(false);
    // An empty delta dropped and the rest renumbered: the count and last sequence still tell.
    const emptyGone = transcript();
    emptyGone.splice(6, 1);
    emptyGone.forEach((item, i) => {
      if (item.$case === "event") item.value.sequence = BigInt(i + 1);
    });
    expect(verifyTranscript(emptyGone)).toMatchObject({ verified: false });
  });

  it("a transcript without its terminal event, or with a repeated event, fails", () => {
    const cut = transcript().slice(0, -1);
    expect(verifyTranscript(cut)).toMatchObject({
      verified: false,
      problem: expect.stringMatching(/incomplete/),
    });
    const repeated = transcript();
    repeated.splice(3, 0, repeated[2] as TranscriptItem);
    expect(verifyTranscript(repeated).verified).toBe(false);
  });

  it("a snapshot stands for the events it covers", () => {
    const items = transcript();
    const snapshot: TranscriptItem = {
      $case: "snapshot",
      value: {
        generationId: "g",
        sequence: 4n,
        text: deltas.slice(0, 2).join(""),
        toolCalls: [],
        outputEvents: 2n,
        usage: undefined,
      },
    };
    expect(verifyTranscript([snapshot, ...items.slice(4)])).toMatchObject({
      verified: true,
      text: deltas.join(""),
    });
    const tampered = { ...snapshot, value: { ...snapshot.value, text: "Hello, world" } } as TranscriptItem;
    expect(verifyTranscript([tampered, ...items.slice(4)]).verified).toBe(false);
    expect(verifyTranscript([items[0] as TranscriptItem, snapshot, ...items.slice(4)]).verified).toBe(false);
  });
});
