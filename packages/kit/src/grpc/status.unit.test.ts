// Issue 7 item 17: a dependency's own error (NATS timeout, PostgreSQL or Redis
// connection) reached the edge as INTERNAL; it is UNAVAILABLE with retry info.
import { status } from "@grpc/grpc-js";
import { JetStreamApiError } from "@nats-io/jetstream";
import { errors } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { ConcurrencyError, InvalidArgumentError, UnavailableError } from "../errors.js";
import { NatsDisconnectedError } from "../nats.js";
import { isTransientNatsError } from "../nats-errors.js";
import { DEFAULT_UNAVAILABLE_RETRY_MS, RETRY_AFTER_KEY, readErrorDetails, toGrpcStatus } from "./status.js";

const pgError = (code: string) =>
  Object.assign(new Error(`postgres ${code}`), { name: "PostgresError", code });
const socketError = (code: string) => Object.assign(new Error(`connect ${code} 127.0.0.1:5432`), { code });

describe("toGrpcStatus: transient dependency errors", () => {
  const transient: [string, unknown][] = [
    ["a NATS request timeout", new errors.TimeoutError()],
    [
      "NATS no responders (JetStream not up yet)",
      new errors.RequestError("503", { cause: new errors.NoRespondersError("s") }),
    ],
    ["NATS connection refused", new errors.ConnectionError("connection refused")],
    ["a JetStream 503", new JetStreamApiError({ code: 503, err_code: 10008, description: "unavailable" })],
    ["a refusal while NATS reconnects", new NatsDisconnectedError()],
    ["PostgreSQL refusing connections", socketError("ECONNREFUSED")],
    [
      "a PostgreSQL connection that ended",
      Object.assign(new Error("write CONNECTION_ENDED"), { code: "CONNECTION_ENDED" }),
    ],
    ["PostgreSQL shutting down (57P01)", pgError("57P01")],
    ["PostgreSQL connection failure (08006)", pgError("08006")],
    ["ioredis offline", new Error("Stream isn't writeable and enableOfflineQueue options is false")],
    ["ioredis connection closed", new Error("Connection is closed.")],
    ["ioredis command timeout", new Error("Command timed out")],
    [
      "ioredis retries exhausted",
      Object.assign(new Error("Reached the max retries per request limit"), {
        name: "MaxRetriesPerRequestError",
      }),
    ],
  ];
  for (const [what, error] of transient) {
    it(`${what} is UNAVAILABLE with retry info`, () => {
      const s = toGrpcStatus(error, "req-1");
      expect(status[s.code]).toBe("UNAVAILABLE");
      // The dependency's own text (hosts, subjects) stays in the log.
      expect(s.details).toBe("a dependency is unavailable, retry later");
      expect(Number(s.metadata.get(RETRY_AFTER_KEY)[0])).toBeGreaterThan(0);
      expect(readErrorDetails(s.metadata).retryAfterMs).toBeGreaterThan(0);
    });
  }

  it("a refusal while NATS reconnects is a transient NATS error (retried by producers within their lease)", () => {
    expect(isTransientNatsError(new NatsDisconnectedError())).toBe(true);
  });

  it("an UnavailableError carries its own retry delay, or the default", () => {
    expect(
      readErrorDetails(toGrpcStatus(new UnavailableError("x", { retryAfterMs: 2500 })).metadata),
    ).toEqual({
      violations: [],
      retryAfterMs: 2500,
      others: [],
    });
    expect(readErrorDetails(toGrpcStatus(new UnavailableError()).metadata).retryAfterMs).toBe(
      DEFAULT_UNAVAILABLE_RETRY_MS,
    );
  });

  it("sends an error's typed details beside its field violations", () => {
    const detail = { typeUrl: "type.googleapis.com/spool.test.v1.Thing", value: new Uint8Array([8, 1]) };
    const error = new InvalidArgumentError("bad", [{ field: "f", description: "d" }]).withDetail(detail);
    const read = readErrorDetails(toGrpcStatus(error).metadata);
    expect(read.violations).toEqual([{ field: "f", description: "d" }]);
    expect(read.others.map((o) => [o.typeUrl, [...o.value]])).toEqual([[detail.typeUrl, [8, 1]]]);
  });

  it("everything else keeps its mapping: bugs stay INTERNAL, conflicts ABORTED, SQL errors INTERNAL", () => {
    expect(status[toGrpcStatus(new Error("boom")).code]).toBe("INTERNAL");
    expect(status[toGrpcStatus(new errors.ClosedConnectionError()).code]).toBe("INTERNAL");
    expect(status[toGrpcStatus(pgError("23505")).code]).toBe("INTERNAL");
    expect(status[toGrpcStatus(new ConcurrencyError("s", 1)).code]).toBe("ABORTED");
    expect(toGrpcStatus(new Error("boom")).metadata.get(RETRY_AFTER_KEY)).toEqual([]);
  });
});
