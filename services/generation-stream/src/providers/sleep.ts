import { cancelledError } from "./types.js";

/**
 * Waits `ms`, or rejects with a "cancelled" ProviderError as soon as `signal`
 * aborts. Uses the global timers (not node:timers/promises) so tests can drive
 * it with fake timers.
 */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(cancelledError());
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(cancelledError());
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
