// A scanner that scans nothing and calls everything clean: for development
// only (SPOOL_FILES_SCANNER=none, or however the service names it). Its
// verdicts say scanner "none", so a file passed by it is recognisable in the
// log and can be scanned again once a real scanner is configured. Never use
// it where uploads come from people you do not trust.
import type { Scanner, ScanResult } from "./scanner.js";

export function createNoopScanner(): Scanner {
  return {
    name: "none",
    async scan(content: AsyncIterable<Uint8Array>): Promise<ScanResult> {
      // Drained, so the caller's read of the blob completes as with a real scanner.
      for await (const _ of content) {
      }
      return { verdict: "clean" };
    },
    close: async () => {},
  };
}
