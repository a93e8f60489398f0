import { createPrivateKey, generateKeyPairSync, type KeyObject, randomUUID } from "node:crypto";
import type { KV } from "@nats-io/kv";
import { ConcurrencyError, type EventStore, JWKS_KEY, type SecretBox } from "@spool/kit";
import { exportJWK, type JWK } from "jose";
import { SigningKeyActivated, SigningKeyCreated, SigningKeyRetired, Subjects } from "../domain/events.js";
import { type KeyRing, keyRingReducer, type SigningKey, verifyingKeys } from "../domain/keyring.js";

export interface CurrentKey {
  kid: string;
  privateKey: KeyObject;
}

/**
 * The signing key ring on the log (subject auth.keys). Private keys are sealed
 * with the master key, bound to their kid; the public set is published as a
 * JWKS by RPC and in NATS KV, where every service's verifier reads it.
 */
export class KeyManager {
  readonly #store: EventStore;
  readonly #box: SecretBox;
  readonly #kv: KV;
  readonly #overlapMs: number;
  readonly #unsealed = new Map<string, KeyObject>();

  constructor(options: { store: EventStore; box: SecretBox; kv: KV; overlapMs: number }) {
    this.#store = options.store;
    this.#box = options.box;
    this.#kv = options.kv;
    this.#overlapMs = options.overlapMs;
  }

  load() {
    return this.#store.load(Subjects.keys(), keyRingReducer);
  }

  /** Converges on boot: a ring with no current key gets one; the JWKS is (re)published. */
  async ensureCurrentKey(): Promise<void> {
    for (;;) {
      const { state, version } = await this.load();
      if (state.currentKid) break;
      try {
        await this.#appendNewKey(state, version, Date.now());
        break;
      } catch (e) {
        if (!(e instanceof ConcurrencyError)) throw e; // another replica made one
      }
    }
    await this.publish();
  }

  /**
   * Makes a new key current. The previous key keeps verifying for the overlap
   * period; keys whose overlap has ended are retired in the same message.
   */
  async rotate(
    nowMs = Date.now(),
  ): Promise<{ kid: string; previousKid: string; previousRetireAfterMs: number }> {
    for (let attempt = 0; ; attempt++) {
      const { state, version } = await this.load();
      try {
        const result = await this.#appendNewKey(state, version, nowMs);
        await this.publish();
        return result;
      } catch (e) {
        if (!(e instanceof ConcurrencyError) || attempt >= 5) throw e;
      }
    }
  }

  async #appendNewKey(ring: KeyRing, version: number, nowMs: number) {
    const kid = randomUUID();
    const { publicKey, privateKey } = generateKeyPairSync("ed25519");
    const publicJwk: JWK = { ...(await exportJWK(publicKey)), kid, alg: "EdDSA", use: "sig" };
    const sealed = this.#box.seal(privateKey.export({ type: "pkcs8", format: "der" }), `signing-key:${kid}`);
    const previousKid = ring.currentKid ?? "";
    const previousRetireAfterMs = previousKid ? nowMs + this.#overlapMs : 0;
    const expired = ring.keys.filter(
      (k) => !k.retired && k.retireAfterMs !== undefined && k.retireAfterMs <= nowMs,
    );
    await this.#store.append(
      Subjects.keys(),
      [
        SigningKeyCreated.create({
          kid,
          alg: "EdDSA",
          publicJwk: JSON.stringify(publicJwk),
          sealedPrivateKey: sealed,
          masterKeyId: this.#box.currentKeyId,
          createdAtMs: BigInt(nowMs),
        }),
        SigningKeyActivated.create({
          kid,
          previousKid,
          previousRetireAfterMs: BigInt(previousRetireAfterMs),
        }),
        ...expired.map((k) => SigningKeyRetired.create({ kid: k.kid })),
      ],
      { expectedSequence: version },
    );
    this.#unsealed.set(kid, privateKey);
    return { kid, previousKid, previousRetireAfterMs };
  }

  /** The key that signs now (the ring is re-read, so a rotation by another replica is picked up). */
  async current(): Promise<CurrentKey> {
    const { state } = await this.load();
    const key = state.keys.find((k) => k.kid === state.currentKid);
    if (!key) throw new Error("no current signing key");
    return { kid: key.kid, privateKey: this.#unseal(key) };
  }

  #unseal(key: SigningKey): KeyObject {
    let k = this.#unsealed.get(key.kid);
    if (!k) {
      const der = this.#box.open(key.sealedPrivateKey, `signing-key:${key.kid}`);
      k = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
      this.#unsealed.set(key.kid, k);
    }
    return k;
  }

  async jwks(nowMs = Date.now()): Promise<{ keys: JWK[] }> {
    const { state } = await this.load();
    return { keys: verifyingKeys(state, nowMs).map((k) => JSON.parse(k.publicJwk) as JWK) };
  }

  async publish(): Promise<void> {
    await this.#kv.put(JWKS_KEY, JSON.stringify(await this.jwks()));
  }
}
