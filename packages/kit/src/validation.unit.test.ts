import { createRequire } from "node:module";
import { fromBinary } from "@bufbuild/protobuf";
import { type DescriptorProto, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { StartGenerationRequest } from "@spool/proto/spool/generation/v1/generation.js";
import { describe, expect, it } from "vitest";
import { readDescriptorSet, SPOOL_DESCRIPTOR_SET } from "./grpc/reflection.js";
import {
  checkRequestText,
  MAX_TIMESTAMP_MS,
  requestTextViolations,
  sequenceProblem,
  snakeCase,
  timestampMsProblem,
} from "./validation.js";

describe("requestTextViolations", () => {
  it("refuses NUL, C0 and C1 controls, DEL and bidi overrides, naming the field", () => {
    for (const bad of [
      "a\u0000b",
      "\u0001",
      "\u001b[31m",
      "\u007f",
      "\u0085",
      "\u009f",
      "\u202e",
      "\u2066x",
    ]) {
      const violations = requestTextViolations({ email: bad });
      expect(violations.map((v) => v.field)).toEqual(["email"]);
    }
  });

  it("accepts tab, LF, CR and ordinary Unicode", () => {
    expect(requestTextViolations({ content: "line 1\n\tline 2\r\n", name: "Zoë 東京 🙂 ‏" })).toEqual([]);
  });

  it("names nested, repeated and oneof fields as the .proto does", () => {
    const request = StartGenerationRequest.fromPartial({
      clientRequestId: "ok",
      conversationId: "c\u0000",
      messages: [
        { role: "user", content: "fine" },
        { role: "user", content: "bad\u0007" },
      ],
    });
    expect(requestTextViolations(request).map((v) => v.field)).toEqual([
      "messages[1].content",
      "conversation_id",
    ]);
    // A oneof ({ $case, value } under the oneof's name) is named by its member.
    expect(
      requestTextViolations({ item: { $case: "toolCall", value: { argumentsJson: "\u0000" } } }).map(
        (v) => v.field,
      ),
    ).toEqual(["tool_call.arguments_json"]);
  });

  it("skips bytes, numbers and bigints", () => {
    expect(requestTextViolations({ data: new Uint8Array([0, 1, 2]), n: 0, b: 0n, ok: true })).toEqual([]);
  });

  it("throws INVALID_ARGUMENT with every violation", () => {
    expect(() => checkRequestText({ userId: "\u0000", type: "\u0000" })).toThrow(
      expect.objectContaining({
        code: "INVALID_ARGUMENT",
        violations: [
          expect.objectContaining({ field: "user_id" }),
          expect.objectContaining({ field: "type" }),
        ],
      }),
    );
  });

  it("turns every field name of every Spool message back into its .proto name", () => {
    const set = fromBinary(
      FileDescriptorSetSchema,
      readDescriptorSet(createRequire(import.meta.url).resolve(SPOOL_DESCRIPTOR_SET)),
    );
    const fields: { name: string; jsonName: string }[] = [];
    const collect = (m: DescriptorProto): void => {
      for (const f of m.field) fields.push({ name: f.name, jsonName: f.jsonName });
      for (const n of m.nestedType) collect(n);
    };
    for (const file of set.file) for (const m of file.messageType) collect(m);
    expect(fields.length).toBeGreaterThan(50);
    const wrong = fields.filter((f) => snakeCase(f.jsonName || f.name) !== f.name);
    expect(wrong).toEqual([]);
  });
});

describe("int64 range checks", () => {
  it("accepts 0 through the end of year 9999 for millisecond timestamps", () => {
    expect(timestampMsProblem(0n)).toBeUndefined();
    expect(timestampMsProblem(BigInt(MAX_TIMESTAMP_MS))).toBeUndefined();
    expect(timestampMsProblem(1_700_000_000_000n)).toBeUndefined();
    expect(new Date(MAX_TIMESTAMP_MS).toISOString()).toBe("9999-12-31T23:59:59.999Z");
    for (const bad of [-1n, BigInt(MAX_TIMESTAMP_MS) + 1n, 8_640_000_000_000_000n, 2n ** 63n - 1n]) {
      expect(timestampMsProblem(bad)).toMatch(/between 0 and 253402300799999/);
    }
  });

  it("accepts sequences up to 2^53-1", () => {
    expect(sequenceProblem(2n ** 53n - 1n)).toBeUndefined();
    expect(sequenceProblem(-1n)).toBeDefined();
    expect(sequenceProblem(2n ** 53n)).toMatch(/between 0 and/);
  });
});
