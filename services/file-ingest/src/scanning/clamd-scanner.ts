// ClamAV's clamd over its INSTREAM protocol (unix socket or TCP):
//   "zINSTREAM\0", then chunks each prefixed by its length (4 bytes, big
//   endian), then a zero length; clamd answers one NUL-terminated line:
//   "stream: OK", "stream: <signature> FOUND", or an error such as
//   "INSTREAM size limit exceeded. ERROR".
// Anything but OK or FOUND (an error line, a closed or silent socket, a
// timeout, more bytes than maxStreamBytes) is ScannerUnavailableError: the
// file stays pending, never "clean".
import { connect, type Socket } from "node:net";
import { type Scanner, ScannerUnavailableError, type ScanResult } from "./scanner.js";

export type ClamdAddress = { socketPath: string } | { host: string; port: number };

export interface ClamdScannerOptions {
  /** Where clamd listens: its LocalSocket, or TCPAddr/TCPSocket. */
  address: ClamdAddress;
  /** The whole scan (connect, stream, verdict) must finish within this (default 120 s). */
  timeoutMs?: number;
  /** Connecting must succeed within this (default 5 s). */
  connectTimeoutMs?: number;
  /**
   * The most bytes sent to clamd (default 100 MiB); keep it at or below clamd's
   * StreamMaxLength. Larger content is ScannerUnavailableError (stays pending).
   */
  maxStreamBytes?: number;
  /** Size of each INSTREAM chunk (default 64 KiB). */
  chunkBytes?: number;
}

export const CLAMD_DEFAULTS = {
  timeoutMs: 120_000,
  connectTimeoutMs: 5_000,
  maxStreamBytes: 100 * 1024 * 1024,
  chunkBytes: 64 * 1024,
} as const;

/** Longest reply line accepted from clamd: a signature name is short. */
const MAX_REPLY_BYTES = 4_096;

export interface ClamdScanner extends Scanner {
  /** PING → PONG: true when clamd answers (health). */
  ping(options?: { timeoutMs?: number }): Promise<boolean>;
}

export function createClamdScanner(options: ClamdScannerOptions): ClamdScanner {
  const timeoutMs = options.timeoutMs ?? CLAMD_DEFAULTS.timeoutMs;
  const connectTimeoutMs = options.connectTimeoutMs ?? CLAMD_DEFAULTS.connectTimeoutMs;
  const maxStreamBytes = options.maxStreamBytes ?? CLAMD_DEFAULTS.maxStreamBytes;
  const chunkBytes = options.chunkBytes ?? CLAMD_DEFAULTS.chunkBytes;
  if (!(chunkBytes > 0 && chunkBytes <= 0xffffffff)) throw new RangeError("chunkBytes out of range");

  async function scan(content: AsyncIterable<Uint8Array>, scanOptions?: { signal?: AbortSignal }) {
    const session = await Session.open(options.address, connectTimeoutMs, timeoutMs, scanOptions?.signal);
    try {
      await session.write(Buffer.from("zINSTREAM\0"));
      let sent = 0;
      for await (const piece of content) {
        for (let offset = 0; offset < piece.byteLength; offset += chunkBytes) {
          const chunk = piece.subarray(offset, Math.min(piece.byteLength, offset + chunkBytes));
          sent += chunk.byteLength;
          if (sent > maxStreamBytes) {
            throw new ScannerUnavailableError(
              `content is larger than the scanner's limit of ${maxStreamBytes} bytes`,
            );
          }
          const length = Buffer.alloc(4);
          length.writeUInt32BE(chunk.byteLength);
          // clamd may answer (size limit) and close while we send: the reply tells why.
          if (!(await session.write(length, chunk))) break;
        }
        if (session.replied) break;
      }
      await session.write(Buffer.alloc(4));
      return parseScanReply(await session.reply());
    } finally {
      session.close();
    }
  }

  async function ping(pingOptions?: { timeoutMs?: number }): Promise<boolean> {
    const t = pingOptions?.timeoutMs ?? connectTimeoutMs;
    try {
      const session = await Session.open(options.address, t, t, undefined);
      try {
        await session.write(Buffer.from("zPING\0"));
        return (await session.reply()) === "PONG";
      } finally {
        session.close();
      }
    } catch {
      return false;
    }
  }

  return { name: "clamd", scan, ping, close: async () => {} };
}

/** "stream: OK" → clean; "stream: <sig> FOUND" → infected; anything else → unavailable. */
export function parseScanReply(reply: string): ScanResult {
  if (reply === "stream: OK") return { verdict: "clean" };
  const found = /^stream: (.+) FOUND$/.exec(reply);
  if (found?.[1]) return { verdict: "infected", signature: found[1] };
  if (/size limit exceeded/i.test(reply)) {
    throw new ScannerUnavailableError("clamd refused the stream: its StreamMaxLength was exceeded");
  }
  throw new ScannerUnavailableError(`clamd did not scan the stream: ${reply.slice(0, 200)}`);
}

/** One connection to clamd: writes with backpressure, one NUL-terminated reply, a deadline over all of it. */
class Session {
  readonly #socket: Socket;
  readonly #reply: Promise<string>;
  #replied = false;
  #failure: ScannerUnavailableError | undefined;
  readonly #timer: NodeJS.Timeout;
  readonly #onAbort: () => void;
  readonly #signal: AbortSignal | undefined;

  private constructor(socket: Socket, timeoutMs: number, signal: AbortSignal | undefined) {
    this.#socket = socket;
    this.#signal = signal;
    let buffer = Buffer.alloc(0);
    this.#reply = new Promise<string>((resolve, reject) => {
      const fail = (e: ScannerUnavailableError) => {
        this.#failure ??= e;
        reject(this.#failure);
        socket.destroy();
      };
      socket.on("data", (data: Buffer) => {
        buffer = Buffer.concat([buffer, data]);
        const end = buffer.indexOf(0);
        if (end >= 0) {
          this.#replied = true;
          resolve(buffer.subarray(0, end).toString("utf8").trim());
        } else if (buffer.length > MAX_REPLY_BYTES) {
          fail(new ScannerUnavailableError("clamd sent an overlong reply"));
        }
      });
      socket.on("error", (err) => {
        // A reset after clamd replied (it closes on a size limit) is not news.
        if (!this.#replied)
          fail(new ScannerUnavailableError(`clamd connection failed: ${err.message}`, { cause: err }));
      });
      socket.on("close", () => {
        if (this.#replied) return;
        // A reply without its NUL terminator still says what happened.
        if (buffer.length > 0) {
          this.#replied = true;
          resolve(buffer.toString("utf8").trim());
        } else fail(new ScannerUnavailableError("clamd closed the connection without a verdict"));
      });
    });
    this.#reply.catch(() => {});
    this.#timer = setTimeout(() => {
      this.#failure ??= new ScannerUnavailableError(`clamd did not answer within ${timeoutMs} ms`);
      socket.destroy(this.#failure);
    }, timeoutMs);
    this.#onAbort = () => {
      this.#failure ??= new ScannerUnavailableError("scan aborted", { cause: signal?.reason });
      socket.destroy(this.#failure);
    };
    signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  static open(
    address: ClamdAddress,
    connectTimeoutMs: number,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<Session> {
    signal?.throwIfAborted();
    return new Promise((resolve, reject) => {
      const socket =
        "socketPath" in address ? connect(address.socketPath) : connect(address.port, address.host);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(
          new ScannerUnavailableError(`clamd did not accept a connection within ${connectTimeoutMs} ms`),
        );
      }, connectTimeoutMs);
      socket.once("error", (err) => {
        clearTimeout(timer);
        reject(new ScannerUnavailableError(`clamd is unreachable: ${err.message}`, { cause: err }));
      });
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        resolve(new Session(socket, timeoutMs, signal));
      });
    });
  }

  get replied(): boolean {
    return this.#replied;
  }

  /** Writes, waiting for the socket to drain; false once clamd has replied (it stops reading). */
  async write(...parts: Uint8Array[]): Promise<boolean> {
    for (const part of parts) {
      if (this.#failure) throw this.#failure;
      if (this.#replied || this.#socket.destroyed) return false;
      if (!this.#socket.write(part)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            this.#socket.off("drain", done);
            this.#socket.off("close", done);
            resolve();
          };
          this.#socket.on("drain", done);
          this.#socket.on("close", done);
        });
      }
    }
    if (this.#failure) throw this.#failure;
    return !this.#replied;
  }

  reply(): Promise<string> {
    return this.#reply;
  }

  close(): void {
    clearTimeout(this.#timer);
    this.#signal?.removeEventListener("abort", this.#onAbort);
    this.#socket.destroy();
  }
}
