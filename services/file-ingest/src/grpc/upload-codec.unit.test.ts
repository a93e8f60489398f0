import { UploadRequest } from "@spool/proto/spool/files/v1/files.js";
import { describe, expect, it } from "vitest";
import { decodeUploadRequest, fileServiceDefinition } from "./upload-codec.js";

const encode = (m: UploadRequest) => Buffer.from(UploadRequest.encode(m).finish());

describe("decodeUploadRequest", () => {
  it("answers a chunk message with a view of the message's bytes, equal to the generated decoder's", () => {
    for (const size of [0, 1, 127, 128, 16_383, 16_384, 1024 * 1024]) {
      const chunk = Buffer.alloc(size, size % 251);
      const wire = encode({ part: { $case: "chunk", value: chunk } });
      const got = decodeUploadRequest(wire);
      expect(got).toEqual(UploadRequest.decode(wire));
      const value = got.part?.$case === "chunk" ? got.part.value : undefined;
      expect(value?.length).toBe(size);
      // Shared, not copied: the same memory as the message.
      if (size > 0) expect(value?.buffer).toBe(wire.buffer);
    }
  });

  it("decodes every other message as the generated decoder does", () => {
    const messages: UploadRequest[] = [
      {
        part: {
          $case: "metadata",
          value: { displayName: "a.txt", contentType: "text/plain", sizeBytes: 3n, sha256: "" },
        },
      },
      { part: { $case: "end", value: {} } },
      { part: undefined },
    ];
    for (const m of messages) {
      const wire = encode(m);
      expect(decodeUploadRequest(wire)).toEqual(UploadRequest.decode(wire));
    }
  });

  it("falls back to the generated decoder when a chunk is not the whole message", () => {
    const chunk = encode({ part: { $case: "chunk", value: Buffer.from("abc") } });
    const end = encode({ part: { $case: "end", value: {} } });
    // A chunk, then another field: the last member of the oneof wins.
    const both = Buffer.concat([chunk, end]);
    expect(decodeUploadRequest(both)).toEqual(UploadRequest.decode(both));
    expect(decodeUploadRequest(both).part?.$case).toBe("end");
    // A chunk whose length runs past the message is refused like the generated decoder refuses it.
    const truncated = chunk.subarray(0, chunk.length - 1);
    expect(() => decodeUploadRequest(truncated)).toThrow();
    expect(() => UploadRequest.decode(truncated)).toThrow();
  });

  it("is the Upload deserializer of the service definition the server mounts", () => {
    expect(fileServiceDefinition.upload.requestDeserialize).toBe(decodeUploadRequest);
    expect(fileServiceDefinition.getFile).toBeDefined();
  });
});
