import { JetStreamApiError } from "@nats-io/jetstream";
import { errors } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { ConcurrencyError } from "./errors.js";
import { isTransientNatsError } from "./nats-errors.js";

describe("isTransientNatsError", () => {
  it("retries timeouts, no responders, disconnection and JetStream 503s", () => {
    expect(isTransientNatsError(new errors.TimeoutError())).toBe(true);
    expect(
      isTransientNatsError(new errors.RequestError("x", { cause: new errors.NoRespondersError("s") })),
    ).toBe(true);
    expect(isTransientNatsError(new errors.ConnectionError("refused"))).toBe(true);
    expect(
      isTransientNatsError(
        Object.assign(new Error("jetstream is not enabled"), { name: "JetStreamNotEnabled" }),
      ),
    ).toBe(true);
    expect(
      isTransientNatsError(new JetStreamApiError({ code: 503, err_code: 10008, description: "unavailable" })),
    ).toBe(true);
    expect(isTransientNatsError(Object.assign(new Error("reset"), { code: "ECONNRESET" }))).toBe(true);
  });

  it("does not retry conflicts, closed connections or bad requests", () => {
    expect(isTransientNatsError(new ConcurrencyError("s", 1))).toBe(false);
    expect(isTransientNatsError(new errors.ClosedConnectionError())).toBe(false);
    expect(
      isTransientNatsError(
        new JetStreamApiError({ code: 400, err_code: 10071, description: "wrong last sequence: 2" }),
      ),
    ).toBe(false);
    expect(isTransientNatsError(new Error("boom"))).toBe(false);
    expect(isTransientNatsError("timeout")).toBe(false);
  });
});
