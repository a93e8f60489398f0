// Server-sent events parsing, from eventsource-parser (the parser the Vercel
// AI SDK and OpenAI's own SDKs build on), under the names this package uses.
import {
  createParser,
  type EventSourceMessage,
  type ParseError,
  type ParserConfig,
} from "eventsource-parser";

export type SseMessage = EventSourceMessage;
export type SseParseError = ParseError;
export type SseParserConfig = ParserConfig;
export type SseParser = ReturnType<typeof createParser>;

export const createSseParser: (config: SseParserConfig) => SseParser = createParser;
