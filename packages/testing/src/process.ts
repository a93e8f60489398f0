import { type ChildProcess, spawn } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

const require = createRequire(import.meta.url);
/**
 * tsx's loader, imported into a plain node process. (tsx's CLI would put a
 * wrapper process in between that SIGKILLs the child when a forwarded signal
 * is not confirmed quickly: shutdown tests must signal the real process.)
 */
const TSX_LOADER = pathToFileURL(join(dirname(require.resolve("tsx/package.json")), "dist/loader.mjs")).href;

export interface Child {
  proc: ChildProcess;
  /** Everything the child wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves when a line of output matches. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Resolves with the exit code (or signal name) once the child has exited. */
  exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): void;
}

/** Runs a TypeScript file as a child process (Node with tsx, "@spool/source" export condition). */
export function runTs(file: string, options: { env?: Record<string, string>; args?: string[] } = {}): Child {
  const proc = spawn(
    process.execPath,
    ["--conditions=@spool/source", "--import", TSX_LOADER, file, ...(options.args ?? [])],
    {
      env: { ...process.env, ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  const waiters = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    out += chunk.toString();
    for (const w of waiters) w();
  };
  proc.stdout?.on("data", onData);
  proc.stderr?.on("data", onData);
  const exited = new Promise<number | string>((resolve) => {
    proc.on("exit", (code, signal) => {
      resolve(code ?? signal ?? "unknown");
      for (const w of waiters) w();
    });
  });
  return {
    proc,
    output: () => out,
    exited,
    kill: (signal = "SIGTERM") => {
      proc.kill(signal);
    },
    waitFor: (pattern, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const m = out.match(pattern);
          if (m) {
            cleanup();
            resolve(m[0]);
          } else if (proc.exitCode !== null || proc.signalCode !== null) {
            cleanup();
            reject(new Error(`child exited before printing ${pattern}:\n${out.slice(-4000)}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${pattern}:\n${out.slice(-4000)}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      }),
  };
}

/** Polls until the check returns a value other than undefined/false, or fails after the bound. */
export async function eventually<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 10_000, intervalMs = 25, what = "condition" } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v as T;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${what} not reached within ${timeoutMs} ms${lastError ? `: ${String(lastError)}` : ""}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
