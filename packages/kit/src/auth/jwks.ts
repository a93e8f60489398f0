import { jetstreamManager } from "@nats-io/jetstream";
import { type KV, type KvEntry, Kvm, type KvWatchEntry } from "@nats-io/kv";
import type { NatsConnection, QueuedIterator } from "@nats-io/transport-node";
import { type CryptoKey, importJWK, type JSONWebKeySet, type KeyObject } from "jose";
import type { Namespace } from "../namespace.js";
import { ACCESS_TOKEN_ALG, type KeySource } from "./verifier.js";

/** KV bucket (per namespace) where the auth service publishes its JWKS, under key "jwks". */
export function jwksBucketName(namespace: Namespace): string {
  return namespace.stream("AUTH_JWKS");
}
export const JWKS_KEY = "jwks";

/** Creates the bucket, or opens it when it exists: for the auth service alone, which owns it. */
export async function createJwksBucket(nc: NatsConnection, namespace: Namespace): Promise<KV> {
  return new Kvm(nc).create(jwksBucketName(namespace), { history: 1 });
}

/**
 * Opens the bucket auth created; throws (JetStream "stream not found") while
 * it does not exist yet. Every other service opens it, never creates it: a
 * bucket made by a reader would hide that auth has not run.
 */
export async function openJwksBucket(nc: NatsConnection, namespace: Namespace): Promise<KV> {
  const name = jwksBucketName(namespace);
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(`KV_${name}`);
  return new Kvm(nc).open(name, { allow_direct: info.config.allow_direct });
}

export interface KvJwksSourceOptions {
  /** An unknown `kid` refetches the set at most this often (default 1 s). */
  minRefetchMs?: number;
  /**
   * The set read from KV is trusted this long (default 30 s); then the next
   * call reads it again and the new set replaces the old one, so a key the
   * auth service stopped publishing is forgotten within this bound even if
   * the watch below missed the change.
   */
  maxAgeMs?: number;
  /** Follow the KV key for immediate updates (default true). */
  watch?: boolean;
}

type Key = CryptoKey | KeyObject;

/**
 * Verification keys from the JWKS the auth service publishes in NATS KV.
 *
 * The set held is always the latest one read, replaced as a whole: a key that
 * leaves the JWKS (its overlap ended) is forgotten. Updates arrive through a
 * KV watch; independently, a set older than `maxAgeMs` is read again before
 * it is used (and when that read fails, keys are refused rather than served
 * from a set that may hold withdrawn keys). An unknown `kid` refetches the
 * set at most once per `minRefetchMs`, so a flood of forged key ids cannot
 * hammer NATS.
 */
export class KvJwksSource implements KeySource {
  readonly #kv: KV;
  readonly #minRefetchMs: number;
  readonly #maxAgeMs: number;
  readonly #watchEnabled: boolean;
  #keys = new Map<string, Key>();
  /** KV revision of the set held: an older one (a slow read racing the watch) never replaces it. */
  #revision = 0;
  /** When the set held was last known to be the published one. */
  #confirmedAt = Number.NEGATIVE_INFINITY;
  #lastAttempt = Number.NEGATIVE_INFINITY;
  #lastError: unknown;
  #inflight: Promise<void> | undefined;
  #watcher: QueuedIterator<KvWatchEntry> | undefined;
  #watching: Promise<void> | undefined;
  #closed = false;

  constructor(kv: KV, options: KvJwksSourceOptions = {}) {
    this.#kv = kv;
    this.#minRefetchMs = options.minRefetchMs ?? 1_000;
    this.#maxAgeMs = options.maxAgeMs ?? 30_000;
    this.#watchEnabled = options.watch ?? true;
  }

  has(kid: string): boolean {
    return this.#fresh(Date.now()) && this.#keys.has(kid);
  }

  async keyFor(kid: string): Promise<Key | undefined> {
    const now = Date.now();
    if (this.#fresh(now)) {
      const known = this.#keys.get(kid);
      if (known) return known;
      if (!this.#inflight && now - this.#lastAttempt < this.#minRefetchMs) return undefined;
    } else if (
      !this.#inflight &&
      this.#lastError !== undefined &&
      now - this.#lastAttempt < this.#minRefetchMs
    ) {
      // Stale and the last read failed a moment ago: refuse without hammering NATS.
      throw new Error("signing keys could not be read from NATS KV", { cause: this.#lastError });
    }
    // A fetch under way (the first one, at start) may bring this kid: wait for it rather than refuse.
    await this.refresh();
    return this.#keys.get(kid);
  }

  /** Reads the published set now (joining a read under way). */
  refresh(): Promise<void> {
    this.#inflight ??= this.#load().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  /** Stops the watch (it also ends when the NATS connection closes). */
  async close(): Promise<void> {
    this.#closed = true;
    this.#watcher?.stop();
    await this.#watching;
  }

  #fresh(now: number): boolean {
    return now - this.#confirmedAt < this.#maxAgeMs;
  }

  async #load(): Promise<void> {
    const startedAt = Date.now();
    this.#lastAttempt = startedAt;
    try {
      await this.#apply(await this.#kv.get(JWKS_KEY), startedAt);
      this.#lastError = undefined;
    } catch (e) {
      this.#lastError = e;
      throw e;
    }
    this.#startWatch();
  }

  /** Replaces the set with the entry's (no entry, or a deleted one, is an empty set). */
  async #apply(entry: KvEntry | null, seenAt: number): Promise<void> {
    const revision = entry?.revision ?? 0;
    if (revision < this.#revision) return;
    const keys =
      revision === this.#revision
        ? this.#keys
        : entry?.operation === "PUT"
          ? await importJwks(JSON.parse(entry.string()) as JSONWebKeySet)
          : new Map<string, Key>();
    if (revision < this.#revision) return; // a newer set arrived while this one was imported
    this.#keys = keys;
    this.#revision = revision;
    this.#confirmedAt = Math.max(this.#confirmedAt, seenAt);
  }

  #startWatch(): void {
    if (!this.#watchEnabled || this.#watching || this.#closed) return;
    this.#watching = (async () => {
      const watcher = await this.#kv.watch({ key: JWKS_KEY });
      this.#watcher = watcher;
      if (this.#closed) watcher.stop();
      try {
        for await (const entry of watcher) {
          await this.#apply(entry, Date.now()).catch(() => {
            // An unreadable set: distrust the one held, so the next call reads again (and fails closed).
            this.#confirmedAt = Number.NEGATIVE_INFINITY;
          });
        }
      } finally {
        watcher.stop();
      }
    })()
      .catch(() => {
        // The connection closed or the watch could not start: the max age still bounds staleness,
        // and the next read starts a new watch.
      })
      .finally(() => {
        this.#watcher = undefined;
        this.#watching = undefined;
      });
  }
}

/** Imports the EdDSA keys of a JWK set by kid; keys of other algorithms are ignored. */
export async function importJwks(set: JSONWebKeySet): Promise<Map<string, Key>> {
  const keys = new Map<string, Key>();
  for (const jwk of set.keys ?? []) {
    if (!jwk.kid || (jwk.alg && jwk.alg !== ACCESS_TOKEN_ALG) || jwk.kty !== "OKP" || jwk.crv !== "Ed25519")
      continue;
    keys.set(jwk.kid, (await importJWK(jwk, ACCESS_TOKEN_ALG)) as Key);
  }
  return keys;
}
