import { generateKeyPairSync } from "node:crypto";
import type { KV } from "@nats-io/kv";
import { exportJWK } from "jose";
import { describe, expect, it } from "vitest";
import { KvJwksSource } from "./jwks.js";

describe("KvJwksSource", () => {
  it("calls arriving while the first fetch runs wait for it instead of refusing the key", async () => {
    const { publicKey } = generateKeyPairSync("ed25519");
    const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k1", alg: "EdDSA" }] });
    let gets = 0;
    const kv = {
      get: async () => {
        gets++;
        await new Promise((r) => setTimeout(r, 50));
        return { operation: "PUT", string: () => jwks };
      },
    } as unknown as KV;
    const source = new KvJwksSource(kv, { minRefetchMs: 60_000 });
    const keys = await Promise.all(Array.from({ length: 64 }, () => source.keyFor("k1")));
    expect(keys.every((k) => k !== undefined)).toBe(true);
    expect(gets).toBe(1);
    // An unknown kid inside the refetch interval does not fetch again.
    expect(await source.keyFor("k2")).toBeUndefined();
    expect(gets).toBe(1);
  });
});
