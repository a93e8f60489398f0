import { generateKeyPairSync } from "node:crypto";
import type { KV } from "@nats-io/kv";
import { exportJWK } from "jose";
import { afterEach, describe, expect, it, vi } from "vitest";
import { KvJwksSource } from "./jwks.js";

const jwk = async (kid: string) => ({
  ...(await exportJWK(generateKeyPairSync("ed25519").publicKey)),
  kid,
  alg: "EdDSA",
});

/** A KV holding one JWKS that the test replaces; every `get` is counted. */
function fakeKv(initial: string) {
  const state = { value: initial, revision: 1, gets: 0, fail: false };
  const kv = {
    get: async () => {
      state.gets++;
      if (state.fail) throw new Error("nats away");
      return { operation: "PUT", revision: state.revision, string: () => state.value };
    },
  } as unknown as KV;
  const publish = (value: string) => {
    state.value = value;
    state.revision++;
  };
  return { kv, state, publish };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("KvJwksSource", () => {
  it("calls arriving while the first fetch runs wait for it instead of refusing the key", async () => {
    const { publicKey } = generateKeyPairSync("ed25519");
    const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k1", alg: "EdDSA" }] });
    let gets = 0;
    const kv = {
      get: async () => {
        gets++;
        await new Promise((r) => setTimeout(r, 50));
        return { operation: "PUT", revision: 1, string: () => jwks };
      },
    } as unknown as KV;
    const source = new KvJwksSource(kv, { minRefetchMs: 60_000, watch: false });
    const keys = await Promise.all(Array.from({ length: 64 }, () => source.keyFor("k1")));
    expect(keys.every((k) => k !== undefined)).toBe(true);
    expect(gets).toBe(1);
    // An unknown kid inside the refetch interval does not fetch again.
    expect(await source.keyFor("k2")).toBeUndefined();
    expect(gets).toBe(1);
  });

  it("past its max age the set is read again and replaces the old one: a withdrawn key is forgotten", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const { kv, state, publish } = fakeKv(JSON.stringify({ keys: [await jwk("old"), await jwk("new")] }));
    const source = new KvJwksSource(kv, { maxAgeMs: 30_000, watch: false });
    expect(await source.keyFor("old")).toBeDefined();
    expect(source.has("old")).toBe(true);
    // The auth service stops publishing "old" (its overlap ended).
    publish(JSON.stringify({ keys: [await jwk("new")] }));
    vi.advanceTimersByTime(30_000);
    // Too old to answer from memory: callers must go through keyFor, which reads the set again.
    expect(source.has("new")).toBe(false);
    expect(await source.keyFor("old")).toBeUndefined();
    expect(state.gets).toBe(2);
    expect(source.has("old")).toBe(false);
    expect(source.has("new")).toBe(true);
    expect(await source.keyFor("new")).toBeDefined();
    expect(state.gets).toBe(2);
  });

  it("refuses keys when the set is past its max age and cannot be read (fail closed)", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const { kv, state } = fakeKv(JSON.stringify({ keys: [await jwk("k1")] }));
    const source = new KvJwksSource(kv, { maxAgeMs: 30_000, minRefetchMs: 1_000, watch: false });
    expect(await source.keyFor("k1")).toBeDefined();
    state.fail = true;
    vi.advanceTimersByTime(30_000);
    await expect(source.keyFor("k1")).rejects.toThrow(/nats away/);
    // Right after a failed read, callers are refused without another read.
    await expect(source.keyFor("k1")).rejects.toThrow(/could not be read/);
    expect(state.gets).toBe(2);
    expect(source.has("k1")).toBe(false);
    state.fail = false;
    vi.advanceTimersByTime(1_000);
    expect(await source.keyFor("k1")).toBeDefined();
    expect(source.has("k1")).toBe(true);
  });
});
