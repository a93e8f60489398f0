// The frame outputFeed() builds once per event is what grpc-js would have
// sent for the same response: trySendFramed writes it unchecked.
import {
  FollowGenerationResponse,
  type GenerationEvent,
} from "@spool/proto/spool/generation/v1/generation.js";
import { describe, expect, it } from "vitest";
import { followDefinition, shareEvent } from "./generation-service.js";

const event: GenerationEvent = {
  generationId: "gen-1",
  sequence: 42n,
  timeMs: 1_700_000_000_000n,
  event: { $case: "delta", value: { text: "héllo, wörld ".repeat(30) } },
};

describe("shareEvent", () => {
  it("frames exactly the bytes the FollowGeneration serializer sends", () => {
    const shared = shareEvent(event);
    const serialize = followDefinition.followGeneration.responseSerialize;
    const expected = serialize({ item: { $case: "event", value: event } });
    expect(shared.framed.readUInt8(0)).toBe(0);
    expect(shared.framed.readUInt32BE(1)).toBe(expected.byteLength);
    expect(Buffer.compare(shared.framed.subarray(5), expected)).toBe(0);
    // The normal path (a follower behind) sends wire, which is the same bytes.
    expect(Buffer.compare(serialize({ preEncoded: shared.wire }), expected)).toBe(0);
    expect(FollowGenerationResponse.decode(shared.wire).item).toEqual({ $case: "event", value: event });
  });
});
