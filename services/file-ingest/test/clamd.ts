// A private clamd for tests (Debian's clamav-daemon package; the system
// service is never started): its own config, socket and signature database
// in a temporary directory. No signature download is possible here, so the
// database is one body signature of the EICAR test string, written by the
// helper; clamd starts with it in well under a second.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually } from "@spool/testing";
import { createClamdScanner } from "../src/scanning/clamd-scanner.js";

/** The EICAR anti-virus test file: harmless, detected as a virus by convention. */
export const EICAR = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/** The name our database gives it (clamd adds ".UNOFFICIAL" for unsigned databases). */
export const EICAR_SIGNATURE = "Spool.Test.EICAR";

export interface PrivateClamd {
  socketPath: string;
  /** clamd's own stream limit (StreamMaxLength), in bytes. */
  streamMaxBytes: number;
  /** Starts clamd (again, same socket and database) and waits for PING/PONG. */
  start(): Promise<void>;
  /** Stops clamd (SIGTERM, then SIGKILL) and waits for it to exit. */
  stop(): Promise<void>;
  /** stop() and removes the temporary directory. */
  cleanup(): Promise<void>;
}

function clamdBinary(): string {
  const fromEnv = process.env.SPOOL_TEST_CLAMD;
  if (fromEnv) return fromEnv;
  if (existsSync("/usr/sbin/clamd")) return "/usr/sbin/clamd";
  throw new Error(
    "clamd not found: install Debian's clamav-daemon (apt-get install clamav-daemon) or set SPOOL_TEST_CLAMD",
  );
}

/** Starts a private clamd with a generated EICAR signature database. */
export async function startClamd(options: { streamMaxBytes?: number } = {}): Promise<PrivateClamd> {
  const binary = clamdBinary();
  const dir = mkdtempSync(join(tmpdir(), "spool-clamd-"));
  const db = join(dir, "db");
  const socketPath = join(dir, "clamd.sock");
  const streamMaxBytes = options.streamMaxBytes ?? 10 * 1024 * 1024;
  // An .ndb body signature: Name:TargetType(0 = any file):Offset(* = anywhere):hex bytes.
  mkdirSync(db);
  writeFileSync(join(db, "spool-test.ndb"), `${EICAR_SIGNATURE}:0:*:${Buffer.from(EICAR).toString("hex")}\n`);
  const config = join(dir, "clamd.conf");
  writeFileSync(
    config,
    [
      `LocalSocket ${socketPath}`,
      "LocalSocketMode 600",
      "Foreground yes",
      `DatabaseDirectory ${db}`,
      `TemporaryDirectory ${dir}`,
      `LogFile ${join(dir, "clamd.log")}`,
      `StreamMaxLength ${streamMaxBytes}`,
      // Nothing to reload in a test; the default self-check re-reads the database every 10 minutes.
      "SelfCheck 0",
      "",
    ].join("\n"),
  );

  let proc: ChildProcess | undefined;
  const scanner = createClamdScanner({ address: { socketPath }, connectTimeoutMs: 1_000 });

  const stop = async () => {
    const p = proc;
    proc = undefined;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((resolve) => p.once("exit", resolve));
    p.kill("SIGTERM");
    const timer = setTimeout(() => p.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
    rmSync(socketPath, { force: true });
  };

  const start = async () => {
    if (proc) return;
    rmSync(socketPath, { force: true });
    const p = spawn(binary, ["-c", config], { stdio: ["ignore", "ignore", "pipe"] });
    proc = p;
    let stderr = "";
    p.stderr?.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4_000);
    });
    try {
      await eventually(
        async () => {
          if (p.exitCode !== null) throw new Error(`clamd exited (${p.exitCode}): ${stderr}`);
          return scanner.ping({ timeoutMs: 500 });
        },
        { timeoutMs: 30_000, intervalMs: 50, what: "clamd to answer PING" },
      );
    } catch (e) {
      await stop();
      throw e;
    }
  };

  await start();
  return {
    socketPath,
    streamMaxBytes,
    start,
    stop,
    cleanup: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
