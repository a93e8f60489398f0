// eventsource-parser, loaded so that tsc does not resolve it.
//
// Why: the package's exports map offers its TypeScript sources under the
// "source" condition, the very condition tsconfig.base.json enables (via
// customConditions) for our own workspace packages. tsc then compiles the
// library's sources and rejects their ".ts" import paths (TS5097). Until the
// workspace condition gets a private name (e.g. "@spool/source"), the import
// goes through a specifier tsc does not follow, and the small part of the API
// used here is described below, copied from eventsource-parser 4's types.d.ts.

export interface SseMessage {
  event?: string | undefined;
  id?: string | undefined;
  data: string;
}

export interface SseParseError extends Error {
  type: "invalid-retry" | "unknown-field" | "max-buffer-size-exceeded";
}

export interface SseParserConfig {
  onEvent?: (event: SseMessage) => void;
  onError?: (error: SseParseError) => void;
  /** Characters buffered across feed() calls (a partial line plus a pending multi-line event). */
  maxBufferSize?: number;
}

export interface SseParser {
  feed(chunk: string): void;
  reset(options?: { consume?: boolean }): void;
}

const specifier: string = "eventsource-parser";
const lib = (await import(specifier)) as { createParser(config: SseParserConfig): SseParser };

export const createSseParser: (config: SseParserConfig) => SseParser = lib.createParser;
