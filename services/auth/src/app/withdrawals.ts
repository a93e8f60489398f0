import { firstIssuableMs } from "@spool/kit";

/**
 * This process's view of subject withdrawals, as every verifier sees them:
 * the kit's RevocationSet fed from the AUTH stream (the later of an event's
 * header time and the time the stream stored it).
 */
export interface WithdrawalClock {
  notBefore(subject: string): number | undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits until a token issued to `subject` now is not refused by its
 * not-before: verifiers refuse every token whose iat second is at or before
 * the withdrawal's second, so a token issued in that second (an enable or a
 * password reset followed at once by a login) would be dead on arrival. At
 * most about a second, and only right after a withdrawal.
 */
export async function awaitIssuable(
  subject: string,
  aggregateNotBeforeMs: number,
  clock: WithdrawalClock | undefined,
): Promise<void> {
  const notBefore = Math.max(aggregateNotBeforeMs, clock?.notBefore(subject) ?? 0);
  if (notBefore <= 0) return;
  const wait = firstIssuableMs(notBefore) - Date.now();
  if (wait > 0) await sleep(wait);
}

/**
 * After a withdrawal is appended: waits (bounded) until this process's
 * revocation set holds it, so the call returns once this replica refuses the
 * subject's tokens and knows the exact not-before for its next issuance.
 * Other services and replicas learn it from the same feed (well within 1 s).
 */
export async function awaitWithdrawalSeen(
  clock: WithdrawalClock | undefined,
  subject: string,
  before: number | undefined,
  timeoutMs = 2_000,
): Promise<void> {
  if (!clock) return;
  const deadline = Date.now() + timeoutMs;
  while ((clock.notBefore(subject) ?? 0) <= (before ?? 0) && Date.now() < deadline) await sleep(10);
}
