import { describe, expect, it } from "vitest";
import { firstAndRest } from "./handlers.js";

async function* of<T>(...items: T[]): AsyncGenerator<T> {
  yield* items;
}

describe("firstAndRest", () => {
  it("splits a request stream into its first message and the others, in order", async () => {
    const { first, rest } = await firstAndRest(of("meta", "chunk-1", "chunk-2"));
    expect(first).toBe("meta");
    const chunks: string[] = [];
    for await (const c of rest) chunks.push(c);
    expect(chunks).toEqual(["chunk-1", "chunk-2"]);
  });

  it("gives no first message for an empty stream, and nothing after", async () => {
    const { first, rest } = await firstAndRest(of<string>());
    expect(first).toBeUndefined();
    const chunks: string[] = [];
    for await (const c of rest) chunks.push(c);
    expect(chunks).toEqual([]);
  });
});
