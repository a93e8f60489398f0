import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * Refresh tokens: `srt.<sessionId>.<generation>.<secret>`, the secret 256
 * random bits (generation 0) or derived from the previous token's secret by
 * HMAC with the server's refresh key (later generations). Only the sha256 of
 * the current token is stored.
 *
 * Deriving successors lets the service (a) recognise any earlier token of a
 * family by hashing forward to the current one — so reuse is detected without
 * keeping every past hash — and (b) hand the same successor to a second,
 * concurrent refresh inside the grace period without storing it in clear.
 * Without the refresh key, a stolen token tells nothing about its successors.
 */
export interface RefreshTokenParts {
  sessionId: string;
  generation: number;
  secret: Buffer;
}

const PREFIX = "srt";
const SECRET_BYTES = 32;
/** A chain longer than this is not followed (bounds the work a forged generation can cause). */
export const MAX_GENERATION_GAP = 50_000;

export function newRefreshSecret(): Buffer {
  return randomBytes(SECRET_BYTES);
}

export function formatRefreshToken(parts: RefreshTokenParts): string {
  return `${PREFIX}.${parts.sessionId}.${parts.generation}.${parts.secret.toString("base64url")}`;
}

/** Parses a presented token; undefined for anything malformed. */
export function parseRefreshToken(token: string): RefreshTokenParts | undefined {
  if (token.length > 200) return undefined;
  const [prefix, sessionId, generation, secret, ...rest] = token.split(".");
  if (prefix !== PREFIX || rest.length > 0 || !sessionId || !generation || !secret) return undefined;
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(sessionId) || !/^\d{1,9}$/.test(generation)) return undefined;
  if (!/^[A-Za-z0-9_-]{43}$/.test(secret)) return undefined;
  return { sessionId, generation: Number(generation), secret: Buffer.from(secret, "base64url") };
}

export function hashRefreshToken(parts: RefreshTokenParts): Buffer {
  return createHash("sha256").update(formatRefreshToken(parts)).digest();
}

/** The successor of a token: same session, next generation, secret derived with the refresh key. */
export function successor(parts: RefreshTokenParts, refreshKey: Buffer): RefreshTokenParts {
  const next = parts.generation + 1;
  const secret = createHmac("sha256", refreshKey)
    .update(`${PREFIX}:${parts.sessionId}:${next}:`)
    .update(parts.secret)
    .digest();
  return { sessionId: parts.sessionId, generation: next, secret };
}

/**
 * True when the presented token is a genuine member of the family whose
 * current token hashes to `currentHash` at `currentGeneration`: hashing
 * forward from it reaches the current token. Constant-time comparison.
 */
export function isFamilyMember(
  presented: RefreshTokenParts,
  currentGeneration: number,
  currentHash: Buffer,
  refreshKey: Buffer,
): boolean {
  const gap = currentGeneration - presented.generation;
  if (gap < 0 || gap > MAX_GENERATION_GAP) return false;
  let parts = presented;
  for (let i = 0; i < gap; i++) parts = successor(parts, refreshKey);
  return safeEqual(hashRefreshToken(parts), currentHash);
}

export function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
