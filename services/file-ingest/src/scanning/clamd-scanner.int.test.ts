// The clamd scanner against a real, private clamd (test/clamd.ts).

import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EICAR, EICAR_SIGNATURE, type PrivateClamd, startClamd } from "../../test/clamd.js";
import { createClamdScanner, parseScanReply } from "./clamd-scanner.js";
import { createNoopScanner } from "./noop-scanner.js";
import { ScannerUnavailableError } from "./scanner.js";

let clamd: PrivateClamd;
beforeAll(async () => {
  clamd = await startClamd({ streamMaxBytes: 1024 * 1024 });
});
afterAll(async () => {
  await clamd?.cleanup();
});

async function* pieces(...parts: (string | Uint8Array)[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield typeof p === "string" ? Buffer.from(p) : p;
}

describe("clamd scanner", () => {
  it("answers PING, calls clean content clean and EICAR infected (also split across chunks)", async () => {
    const scanner = createClamdScanner({ address: { socketPath: clamd.socketPath }, chunkBytes: 16 });
    expect(await scanner.ping()).toBe(true);
    expect(await scanner.scan(pieces("hello, world\n".repeat(1_000)))).toEqual({ verdict: "clean" });
    const infected = await scanner.scan(
      pieces("some text before ", EICAR.slice(0, 20), EICAR.slice(20), " after"),
    );
    expect(infected.verdict).toBe("infected");
    expect(infected.verdict === "infected" && infected.signature).toMatch(new RegExp(`^${EICAR_SIGNATURE}`));
    expect(await scanner.scan(pieces())).toEqual({ verdict: "clean" });
  });

  it("more than clamd's StreamMaxLength is unavailable, never clean", async () => {
    const scanner = createClamdScanner({
      address: { socketPath: clamd.socketPath },
      maxStreamBytes: 8 << 20,
    });
    const big = new Uint8Array(2 * 1024 * 1024).fill(65);
    await expect(scanner.scan(pieces(big))).rejects.toThrow(/StreamMaxLength/);
    await expect(scanner.scan(pieces(big))).rejects.toBeInstanceOf(ScannerUnavailableError);
  });

  it("more than maxStreamBytes is refused before clamd sees it", async () => {
    const scanner = createClamdScanner({ address: { socketPath: clamd.socketPath }, maxStreamBytes: 1_000 });
    await expect(scanner.scan(pieces(new Uint8Array(1_001)))).rejects.toBeInstanceOf(ScannerUnavailableError);
    expect(await scanner.scan(pieces(new Uint8Array(1_000)))).toEqual({ verdict: "clean" });
  });

  it("clamd down: unavailable, and PING says false", async () => {
    const dir = mkdtempSync(join(tmpdir(), "spool-noclamd-"));
    try {
      const scanner = createClamdScanner({ address: { socketPath: join(dir, "missing.sock") } });
      expect(await scanner.ping()).toBe(false);
      await expect(scanner.scan(pieces("x"))).rejects.toBeInstanceOf(ScannerUnavailableError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a clamd that never answers times out as unavailable; one that hangs up without a verdict too", async () => {
    const sockets: import("node:net").Socket[] = [];
    const silent: Server = createServer((s) => {
      sockets.push(s);
      s.on("data", () => {});
    });
    const hangup: Server = createServer((s) => s.once("data", () => s.end()));
    await Promise.all([silent, hangup].map((srv) => new Promise<void>((r) => srv.listen(0, "127.0.0.1", r))));
    try {
      const port = (srv: Server) => (srv.address() as { port: number }).port;
      const slow = createClamdScanner({ address: { host: "127.0.0.1", port: port(silent) }, timeoutMs: 300 });
      await expect(slow.scan(pieces("x"))).rejects.toThrow(/did not answer within 300 ms/);
      const rude = createClamdScanner({ address: { host: "127.0.0.1", port: port(hangup) } });
      await expect(rude.scan(pieces("x"))).rejects.toBeInstanceOf(ScannerUnavailableError);
    } finally {
      for (const s of sockets) s.destroy();
      await Promise.all([silent, hangup].map((srv) => new Promise((r) => srv.close(r))));
    }
  });

  it("parses clamd's replies; only OK is clean", () => {
    expect(parseScanReply("stream: OK")).toEqual({ verdict: "clean" });
    expect(parseScanReply("stream: Win.Test.EICAR_HDB-1 FOUND")).toEqual({
      verdict: "infected",
      signature: "Win.Test.EICAR_HDB-1",
    });
    for (const reply of [
      "INSTREAM size limit exceeded. ERROR",
      "stream: OK?",
      "",
      "UNKNOWN COMMAND",
      "stream:  FOUND",
    ]) {
      expect(() => parseScanReply(reply), reply).toThrow(ScannerUnavailableError);
    }
  });

  it("the no-op scanner (development only) calls everything clean and names itself none", async () => {
    const noop = createNoopScanner();
    expect(noop.name).toBe("none");
    expect(await noop.scan(pieces(EICAR))).toEqual({ verdict: "clean" });
  });
});
