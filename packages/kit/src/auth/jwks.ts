import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { type CryptoKey, importJWK, type JSONWebKeySet, type KeyObject } from "jose";
import type { Namespace } from "../namespace.js";
import { ACCESS_TOKEN_ALG, type KeySource } from "./verifier.js";

/** KV bucket (per namespace) where the auth service publishes its JWKS, under key "jwks". */
export function jwksBucketName(namespace: Namespace): string {
  return namespace.stream("AUTH_JWKS");
}
export const JWKS_KEY = "jwks";

export async function openJwksBucket(nc: NatsConnection, namespace: Namespace): Promise<KV> {
  // create() opens the bucket when it exists and makes it when it does not.
  return new Kvm(nc).create(jwksBucketName(namespace), { history: 1 });
}

/**
 * Verification keys from the JWKS the auth service publishes in NATS KV.
 * Keys are cached by `kid`; an unknown `kid` refetches the set (at most once
 * per `minRefetchMs`, so a flood of forged key ids cannot hammer NATS).
 */
export class KvJwksSource implements KeySource {
  readonly #kv: KV;
  readonly #minRefetchMs: number;
  #keys = new Map<string, CryptoKey | KeyObject>();
  #lastFetch = 0;
  #inflight: Promise<void> | undefined;

  constructor(kv: KV, options: { minRefetchMs?: number } = {}) {
    this.#kv = kv;
    this.#minRefetchMs = options.minRefetchMs ?? 1_000;
  }

  async keyFor(kid: string): Promise<CryptoKey | KeyObject | undefined> {
    const known = this.#keys.get(kid);
    if (known) return known;
    // A fetch under way (the first one, at start) may bring this kid: wait for it rather than refuse.
    if (this.#inflight) await this.#inflight;
    else if (Date.now() - this.#lastFetch >= this.#minRefetchMs) await this.refresh();
    return this.#keys.get(kid);
  }

  refresh(): Promise<void> {
    this.#inflight ??= this.#load().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #load(): Promise<void> {
    this.#lastFetch = Date.now();
    const entry = await this.#kv.get(JWKS_KEY);
    if (entry?.operation !== "PUT") return;
    this.#keys = await importJwks(JSON.parse(entry.string()) as JSONWebKeySet);
  }
}

/** Imports the EdDSA keys of a JWK set by kid; keys of other algorithms are ignored. */
export async function importJwks(set: JSONWebKeySet): Promise<Map<string, CryptoKey | KeyObject>> {
  const keys = new Map<string, CryptoKey | KeyObject>();
  for (const jwk of set.keys ?? []) {
    if (!jwk.kid || (jwk.alg && jwk.alg !== ACCESS_TOKEN_ALG) || jwk.kty !== "OKP" || jwk.crv !== "Ed25519")
      continue;
    keys.set(jwk.kid, (await importJWK(jwk, ACCESS_TOKEN_ALG)) as CryptoKey | KeyObject);
  }
  return keys;
}
