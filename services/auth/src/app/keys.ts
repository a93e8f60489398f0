import { createPrivateKey, generateKeyPairSync, type KeyObject, randomUUID } from "node:crypto";
import type { KV } from "@nats-io/kv";
import {
  ConcurrencyError,
  ConfigError,
  type EventStore,
  JWKS_KEY,
  type Logger,
  SecretBox,
  SecretBoxError,
} from "@spool/kit";
import { exportJWK, type JWK } from "jose";
import { SigningKeyActivated, SigningKeyCreated, SigningKeyRetired, Subjects } from "../domain/events.js";
import {
  type KeyRing,
  keyRingReducer,
  nextRetirement,
  overlapEnded,
  type SigningKey,
  verifyingKeys,
} from "../domain/keyring.js";

/** JetStream's "wrong last sequence": another replica published the JWKS first. */
const WRONG_LAST_SEQUENCE = 10071;

export interface CurrentKey {
  kid: string;
  privateKey: KeyObject;
}

export interface Rotation {
  kid: string;
  previousKid: string;
  previousRetireAfterMs: number;
}

export interface KeyManagerOptions {
  store: EventStore;
  box: SecretBox;
  kv: KV;
  overlapMs: number;
  /** The JWKS is republished at least this often even when no overlap ends, so a missed timer heals (default 60 s). */
  republishIntervalMs?: number;
  logger?: Logger;
}

/**
 * The signing key ring on the log (subject auth.keys). Private keys are sealed
 * with the master key, bound to their kid; the public set is published as a
 * JWKS by RPC and in NATS KV, where every service's verifier reads it.
 *
 * Once started, a timer republishes the KV copy when an overlap ends (and
 * records SigningKeyRetired), and at least every `republishIntervalMs`: the
 * KV never keeps a key that GetJwks has dropped for longer than that. Every
 * replica runs it; retiring and publishing are idempotent.
 */
export class KeyManager {
  readonly #store: EventStore;
  readonly #box: SecretBox;
  readonly #kv: KV;
  readonly #overlapMs: number;
  readonly #intervalMs: number;
  readonly #logger: Logger | undefined;
  readonly #unsealed = new Map<string, KeyObject>();
  #running = false;
  #timer: NodeJS.Timeout | undefined;
  #tick: Promise<void> | undefined;

  constructor(options: KeyManagerOptions) {
    this.#store = options.store;
    this.#box = options.box;
    this.#kv = options.kv;
    this.#overlapMs = options.overlapMs;
    this.#intervalMs = options.republishIntervalMs ?? 60_000;
    this.#logger = options.logger;
  }

  load() {
    return this.#store.load(Subjects.keys(), keyRingReducer);
  }

  /**
   * Converges on boot: a ring with no current key gets one; the current key
   * must open with the configured master keys (else start-up stops: every
   * login would fail); the JWKS is (re)published.
   */
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
    await this.#checkCurrentOpens();
    await this.publish();
  }

  async #checkCurrentOpens(): Promise<void> {
    const { state } = await this.load();
    const key = state.keys.find((k) => k.kid === state.currentKid);
    if (!key) throw new Error("no current signing key");
    try {
      this.#unseal(key);
    } catch (e) {
      if (!(e instanceof SecretBoxError)) throw e;
      // Names the key ids only: never the key material.
      throw new ConfigError([
        `SPOOL_MASTER_KEYS: cannot open the current signing key ${key.kid}, sealed with master key ` +
          `"${SecretBox.keyIdOf(key.sealedPrivateKey)}" (${e.message}); configure the master key it was sealed with`,
      ]);
    }
  }

  /** Keeps the KV JWKS in step with the ring (see the class comment) until stop(). */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    void this.#schedule(false);
  }

  async stop(): Promise<void> {
    this.#running = false;
    clearTimeout(this.#timer);
    await this.#tick;
  }

  /** Arms the timer for the next overlap end, or the periodic republish if that comes first. */
  async #schedule(lastFailed: boolean): Promise<void> {
    if (!this.#running) return;
    let delay = this.#intervalMs;
    try {
      const next = nextRetirement((await this.load()).state);
      if (next !== undefined) delay = Math.min(delay, Math.max(0, next - Date.now()));
    } catch {
      lastFailed = true; // the next tick reads the ring again
    }
    if (lastFailed) delay = Math.max(delay, 1_000); // no hot loop while NATS is away
    if (!this.#running) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#tick = this.#runTick();
    }, delay);
    this.#timer.unref();
  }

  async #runTick(): Promise<void> {
    let failed = false;
    try {
      await this.publish();
    } catch (err) {
      failed = true;
      this.#logger?.warn({ err }, "republishing the JWKS failed; will retry");
    }
    await this.#schedule(failed);
  }

  /**
   * Makes a new key current. The previous key keeps verifying for the overlap
   * period; keys whose overlap has ended are retired in the same message.
   */
  async rotate(nowMs = Date.now()): Promise<Rotation> {
    let result: Rotation;
    for (let attempt = 0; ; attempt++) {
      const { state, version } = await this.load();
      try {
        result = await this.#appendNewKey(state, version, nowMs);
        break;
      } catch (e) {
        if (!(e instanceof ConcurrencyError) || attempt >= 5) throw e;
      }
    }
    // Outside the retry loop: a failed publish must not make a second key.
    await this.publish();
    // The previous key's overlap now ends at previousRetireAfterMs: time the republish for it.
    void this.#schedule(false);
    return result;
  }

  async #appendNewKey(ring: KeyRing, version: number, nowMs: number): Promise<Rotation> {
    const kid = randomUUID();
    const { publicKey, privateKey } = generateKeyPairSync("ed25519");
    const publicJwk: JWK = { ...(await exportJWK(publicKey)), kid, alg: "EdDSA", use: "sig" };
    const sealed = this.#box.seal(privateKey.export({ type: "pkcs8", format: "der" }), `signing-key:${kid}`);
    const previousKid = ring.currentKid ?? "";
    const previousRetireAfterMs = previousKid ? nowMs + this.#overlapMs : 0;
    const expired = overlapEnded(ring, nowMs);
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

  /**
   * Records SigningKeyRetired for keys whose overlap has ended, then writes
   * the JWKS to KV when it differs. The KV write is conditional on the
   * revision read before the ring, so a replica holding an older ring cannot
   * overwrite a newer set: it fails, rereads and retries.
   */
  async publish(nowMs = Date.now()): Promise<void> {
    await this.#retireEnded(nowMs);
    for (let attempt = 0; ; attempt++) {
      const entry = await this.#kv.get(JWKS_KEY);
      const value = JSON.stringify(await this.jwks(nowMs));
      if (entry?.operation === "PUT" && entry.string() === value) return;
      try {
        await this.#kv.put(JWKS_KEY, value, { previousSeq: entry?.revision ?? 0 });
        return;
      } catch (e) {
        if ((e as { code?: unknown }).code !== WRONG_LAST_SEQUENCE || attempt >= 5) throw e;
      }
    }
  }

  /** Appends SigningKeyRetired for every key past its overlap (idempotent: a retired key is skipped). */
  async #retireEnded(nowMs: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const { state, version } = await this.load();
      const ended = overlapEnded(state, nowMs);
      if (ended.length === 0) return;
      try {
        await this.#store.append(
          Subjects.keys(),
          ended.map((k) => SigningKeyRetired.create({ kid: k.kid })),
          { expectedSequence: version },
        );
        return;
      } catch (e) {
        if (!(e instanceof ConcurrencyError) || attempt >= 5) throw e;
      }
    }
  }
}
