import { describe, expect, it } from "vitest";
import { withNatsContext } from "./nats.js";

class FakeTimeout extends Error {}

/** Stands in for a nats.js request failing with noAsyncTraces: no caller frames in its stack. */
function failLater(): Promise<never> {
  return new Promise((_, reject) => setImmediate(() => reject(new FakeTimeout("TIMEOUT"))));
}

async function appendSomething(): Promise<void> {
  try {
    await failLater();
  } catch (e) {
    throw withNatsContext(e, "append to ex.counter.1");
  }
}

describe("withNatsContext", () => {
  it("names the operation and the caller's async frames, keeping the error's type and message", async () => {
    const error = await appendSomething().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FakeTimeout);
    expect((error as Error).message).toBe("TIMEOUT");
    const stack = (error as Error).stack ?? "";
    expect(stack).toContain("during NATS append to ex.counter.1");
    expect(stack).toContain("appendSomething");
  });

  it("annotates an error once, and leaves non-errors alone", async () => {
    const e = new Error("x");
    withNatsContext(withNatsContext(e, "a"), "b");
    expect(e.stack?.match(/during NATS/g)).toHaveLength(1);
    expect(withNatsContext("plain", "c")).toBe("plain");
  });
});
