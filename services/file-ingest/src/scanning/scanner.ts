// The content scanner's contract: clamd over its INSTREAM protocol in
// production, a no-op in development. A file stays pending until a scanner
// answers; "could not scan" is never "clean".

export type ScanResult =
  | { readonly verdict: "clean" }
  | { readonly verdict: "infected"; readonly signature: string };

export interface Scanner {
  /** Recorded in FileScanned.scanner ("clamd", "none"). */
  readonly name: string;
  /**
   * Scans the bytes. Throws ScannerUnavailableError when the scanner cannot
   * answer (down, timeout, size limit of the scanner itself); the caller
   * retries later and the file stays pending.
   */
  scan(content: AsyncIterable<Uint8Array>, options?: { signal?: AbortSignal }): Promise<ScanResult>;
  close(): Promise<void>;
}

export class ScannerUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ScannerUnavailableError";
  }
}
