import { type EventOf, type Reducer, unreachable } from "@spool/kit";
import { AuthEvents } from "./events.js";

/** The events of the key ring's subject. */
export const KeyRingEvents = AuthEvents.pick("SigningKeyCreated", "SigningKeyActivated", "SigningKeyRetired");

export interface SigningKey {
  kid: string;
  alg: string;
  publicJwk: string;
  sealedPrivateKey: Buffer;
  masterKeyId: string;
  createdAtMs: number;
  /** Set when the key stopped signing: it verifies until then. */
  retireAfterMs: number | undefined;
  retired: boolean;
}

/** The signing key ring: one current key signs; earlier keys verify until their overlap ends. */
export interface KeyRing {
  keys: SigningKey[];
  currentKid: string | undefined;
}

export const keyRingReducer: Reducer<KeyRing, EventOf<typeof KeyRingEvents>> = {
  initial: () => ({ keys: [], currentKid: undefined }),
  decode: KeyRingEvents.decode,
  evolve: (state, event) => {
    switch (event.type) {
      case "SigningKeyCreated": {
        const e = event.data;
        const key: SigningKey = {
          kid: e.kid,
          alg: e.alg,
          publicJwk: e.publicJwk,
          sealedPrivateKey: Buffer.from(e.sealedPrivateKey),
          masterKeyId: e.masterKeyId,
          createdAtMs: Number(e.createdAtMs),
          retireAfterMs: undefined,
          retired: false,
        };
        return { ...state, keys: [...state.keys, key] };
      }
      case "SigningKeyActivated": {
        const e = event.data;
        return {
          currentKid: e.kid,
          keys: state.keys.map((k) =>
            k.kid === e.previousKid ? { ...k, retireAfterMs: Number(e.previousRetireAfterMs) } : k,
          ),
        };
      }
      case "SigningKeyRetired": {
        const { kid } = event.data;
        return { ...state, keys: state.keys.map((k) => (k.kid === kid ? { ...k, retired: true } : k)) };
      }
      case "unknown":
        return state;
      default:
        return unreachable(event);
    }
  },
};

/** Keys whose tokens still verify at `nowMs`: the current one and those inside their overlap. */
export function verifyingKeys(ring: KeyRing, nowMs: number): SigningKey[] {
  return ring.keys.filter(
    (k) =>
      !k.retired && (k.kid === ring.currentKid || (k.retireAfterMs !== undefined && nowMs < k.retireAfterMs)),
  );
}

/** Keys past their overlap at `nowMs` that no SigningKeyRetired has recorded yet. */
export function overlapEnded(ring: KeyRing, nowMs: number): SigningKey[] {
  return ring.keys.filter(
    (k) =>
      !k.retired && k.kid !== ring.currentKid && k.retireAfterMs !== undefined && k.retireAfterMs <= nowMs,
  );
}

/** When the next overlap ends (the earliest retireAfterMs of a key not yet retired), if any. */
export function nextRetirement(ring: KeyRing): number | undefined {
  let next: number | undefined;
  for (const k of ring.keys) {
    if (k.retired || k.kid === ring.currentKid || k.retireAfterMs === undefined) continue;
    if (next === undefined || k.retireAfterMs < next) next = k.retireAfterMs;
  }
  return next;
}
