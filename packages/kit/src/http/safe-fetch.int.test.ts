// safeFetch against real local HTTP and HTTPS servers. 127.0.0.1:<port> stands
// in for a public host (the tests allow exactly that address and port through
// `unsafeAllowedTargets`); a second server on 127.0.0.2 with the same port is
// the "internal" target that must never receive a connection. Host names
// resolve through an injected resolver that records every call.
import { once } from "node:events";
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { gzipSync } from "node:zlib";
import { createTestCertificates } from "@spool/testing";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  FailedPreconditionError,
  InvalidArgumentError,
  SafeFetchError,
  type SafeFetchOptions,
  type SafeFetchReason,
  safeFetch,
  safeFetchErrorToSpoolError,
} from "../index.js";

interface TestServer {
  port: number;
  connections: number;
  requests: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; body: string }>;
  closedEarly: number;
  close(): Promise<void>;
}

const BOMB = gzipSync(Buffer.alloc(24 * 1024 * 1024)); // 24 MiB of zeros, ~24 KiB on the wire
const GZIP_HELLO = gzipSync(Buffer.from("hello gzip"));

function routes(state: TestServer) {
  return (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://x");
      state.requests.push({
        method: req.method ?? "",
        url: req.url ?? "",
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      });
      switch (url.pathname) {
        case "/ok":
          res.writeHead(200, { "content-type": "text/plain; charset=utf-8" }).end("hello");
          return;
        case "/headers":
          res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(req.headers));
          return;
        case "/echo":
          res
            .writeHead(200, { "content-type": "application/json" })
            .end(JSON.stringify({ method: req.method, body: Buffer.concat(chunks).toString() }));
          return;
        case "/redirect":
          res
            .writeHead(Number(url.searchParams.get("status") ?? 302), {
              location: url.searchParams.get("to") ?? "/",
            })
            .end();
          return;
        case "/big": {
          // 8 MiB in 64 KiB chunks, no Content-Length: only the streaming limit can stop it.
          res.writeHead(200, { "content-type": "application/octet-stream" });
          let sent = 0;
          const chunk = Buffer.alloc(64 * 1024, 0x61);
          res.on("close", () => {
            if (!res.writableFinished) state.closedEarly++;
          });
          const pump = () => {
            while (sent < 8 * 1024 * 1024) {
              sent += chunk.length;
              if (!res.write(chunk)) {
                res.once("drain", pump);
                return;
              }
            }
            res.end();
          };
          pump();
          return;
        }
        case "/declared-big":
          res.writeHead(200, { "content-length": String(1_000_000_000) });
          res.write(Buffer.alloc(1024));
          return;
        case "/hang":
          return; // never answers
        case "/stall-body":
          res.writeHead(200, { "content-type": "text/plain" });
          res.write("partial");
          return; // never ends
        case "/bomb":
          res
            .writeHead(200, { "content-encoding": "gzip", "content-type": "application/octet-stream" })
            .end(BOMB);
          return;
        case "/gzip":
          res.writeHead(200, { "content-encoding": "gzip", "content-type": "text/plain" }).end(GZIP_HELLO);
          return;
        case "/double-gzip":
          res
            .writeHead(200, { "content-encoding": "gzip, gzip", "content-type": "text/plain" })
            .end(gzipSync(GZIP_HELLO));
          return;
        case "/no-content-gzip":
          res.writeHead(204, { "content-encoding": "gzip" }).end();
          return;
        case "/not-gzip":
          res.writeHead(200, { "content-encoding": "gzip" }).end("this is not gzip");
          return;
        case "/cut-short":
          res.writeHead(200, { "content-length": "1000" });
          res.write("only a little");
          setTimeout(() => res.socket?.destroy(), 20);
          return;
        default:
          res.writeHead(404).end("not found");
      }
    });
  };
}

async function startServer(
  kind: "http" | "https",
  host: string,
  port = 0,
  tls?: { key: string; cert: string },
): Promise<TestServer> {
  const sockets = new Set<Socket>();
  const state: TestServer = {
    port: 0,
    connections: 0,
    requests: [],
    closedEarly: 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, "close");
    },
  };
  const server =
    kind === "https" ? https.createServer({ ...tls }, routes(state)) : http.createServer(routes(state));
  // Counted at TCP accept, before any TLS or HTTP: "no connection" means no SYN answered.
  server.on("connection", (socket: Socket) => {
    state.connections++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  server.on("tlsClientError", () => {});
  server.listen(port, host);
  await once(server, "listening");
  state.port = (server.address() as AddressInfo).port;
  return state;
}

/** An injected resolver: a table of answers (a function for answers that change), with every call recorded. */
function fakeDns(table: Record<string, string[] | (() => string[])>) {
  const calls: string[] = [];
  return {
    calls,
    lookup: async (hostname: string) => {
      calls.push(hostname);
      const entry = table[hostname];
      const addresses = typeof entry === "function" ? entry() : entry;
      if (!addresses) throw Object.assign(new Error(`ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
      return addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
    },
  };
}

async function failure(promise: Promise<unknown>): Promise<SafeFetchError> {
  try {
    await promise;
  } catch (e) {
    expect(e).toBeInstanceOf(SafeFetchError);
    return e as SafeFetchError;
  }
  throw new Error("expected the fetch to fail");
}

async function reason(promise: Promise<unknown>): Promise<SafeFetchReason> {
  return (await failure(promise)).reason;
}

let plain: TestServer;
let internal: TestServer;
let tlsServer: TestServer;
let ca: string;
let P: number;
let S: number;
let dns: ReturnType<typeof fakeDns>;
let rebindAnswers: string[][];

beforeAll(async () => {
  const certs = await createTestCertificates(["safe.test"], ["127.0.0.1"]);
  ca = certs.ca;
  plain = await startServer("http", "127.0.0.1");
  P = plain.port;
  internal = await startServer("http", "127.0.0.2", P);
  tlsServer = await startServer("https", "127.0.0.1", 0, certs);
  S = tlsServer.port;
});

afterAll(async () => {
  await Promise.all([plain?.close(), internal?.close(), tlsServer?.close()]);
});

beforeEach(() => {
  rebindAnswers = [["127.0.0.1"], ["127.0.0.2"]];
  dns = fakeDns({
    "a.test": ["127.0.0.1"],
    "b.test": ["127.0.0.1"],
    "safe.test": ["127.0.0.1"],
    "wrong.test": ["127.0.0.1"],
    "internal.test": ["127.0.0.2"],
    "mixed.test": ["127.0.0.1", "127.0.0.2"],
    "mixed-reversed.test": ["127.0.0.2", "127.0.0.1"],
    "mixed-v6.test": ["127.0.0.1", "::ffff:127.0.0.2"],
    "metadata.test": ["169.254.169.254"],
    // First answer public, every later one private: a rebinding name server.
    "rebind.test": () => (rebindAnswers.length > 1 ? rebindAnswers.shift()! : rebindAnswers[0]!),
  });
});

/** Options for the local servers: 127.0.0.1 on their two ports is let through, nothing else. */
function local(extra: SafeFetchOptions = {}): SafeFetchOptions {
  return {
    allowHttp: true,
    allowedPorts: [P, S, 80, 443],
    unsafeAllowedTargets: [`127.0.0.1:${P}`, `127.0.0.1:${S}`],
    lookup: dns.lookup,
    ca,
    ...extra,
  };
}

describe("the escape hatch is narrow and the counters count", () => {
  it("reaches the stand-in public server only through its exact allow-listed address and port", async () => {
    const before = plain.connections;
    const res = await safeFetch(`http://a.test:${P}/ok`, local());
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("hello");
    expect(plain.connections).toBe(before + 1);
    expect(await reason(safeFetch(`http://a.test:${P}/ok`, local({ unsafeAllowedTargets: [] })))).toBe(
      "ADDRESS_BLOCKED",
    );
    expect(plain.connections).toBe(before + 1);
  });

  it("would reach the internal server if it were allow-listed (so a zero count below means something)", async () => {
    const before = internal.connections;
    const res = await safeFetch(
      `http://internal.test:${P}/ok`,
      local({ unsafeAllowedTargets: [`127.0.0.2:${P}`] }),
    );
    expect(await res.text()).toBe("hello");
    expect(internal.connections).toBe(before + 1);
  });
});

describe("IP literals are refused without DNS and without connecting", () => {
  it.each([
    "127.1",
    "0x7f.1",
    "2130706433",
    "017700000001",
    "0",
    "[::]",
    "[::ffff:7f00:1]",
    "[::ffff:127.0.0.1]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:7f00:1::]",
    "１２７.０.０.１",
    "127。0。0。1",
    "１２７。０。０。１",
    "127.0.0.1.",
    "%31%32%37.0.0.1",
    "[::1]",
    "127.0.0.2",
    "169.254.169.254",
  ])("http://%s:<port>/ is refused", async (host) => {
    const before = plain.connections + internal.connections;
    const e = await failure(safeFetch(`http://${host}:${P}/ok`, local({ unsafeAllowedTargets: [] })));
    expect(e.reason).toBe("ADDRESS_BLOCKED");
    expect(safeFetchErrorToSpoolError(e)).toBeInstanceOf(InvalidArgumentError);
    expect(dns.calls).toEqual([]);
    expect(plain.connections + internal.connections).toBe(before);
  });
});

describe("resolved addresses are checked at connect time", () => {
  it("a resolver answering public then private never connects to the private address", async () => {
    const before = internal.connections;
    // One lookup per connection, and its answer is what is connected to: the
    // private second answer is never used for this request.
    const first = await safeFetch(`http://rebind.test:${P}/ok`, local());
    expect(await first.text()).toBe("hello");
    expect(internal.connections).toBe(before);
    expect(dns.calls).toEqual(["rebind.test"]);
    // The next request resolves again, gets the private answer, and is refused.
    const e = await failure(safeFetch(`http://rebind.test:${P}/ok`, local()));
    expect(e.reason).toBe("ADDRESS_BLOCKED");
    expect(e.message).not.toContain("127.0.0.2");
    expect(dns.calls).toEqual(["rebind.test", "rebind.test"]);
    expect(internal.connections).toBe(before);
  });

  it("a redirect to a rebinding name is resolved and checked again", async () => {
    const before = internal.connections;
    const res = await safeFetch(
      `http://rebind.test:${P}/redirect?to=${encodeURIComponent(`http://rebind.test:${P}/ok`)}`,
      local({ maxRedirects: 3 }),
    ).catch((e: unknown) => e);
    expect(res).toBeInstanceOf(SafeFetchError);
    expect(res).toMatchObject({ reason: "ADDRESS_BLOCKED", hop: 1 });
    expect(internal.connections).toBe(before);
  });

  it.each(["mixed.test", "mixed-reversed.test", "mixed-v6.test"])(
    "mixed records (%s) refuse the whole request",
    async (name) => {
      const before = { plain: plain.connections, internal: internal.connections };
      expect(await reason(safeFetch(`http://${name}:${P}/ok`, local()))).toBe("ADDRESS_BLOCKED");
      expect(plain.connections).toBe(before.plain);
      expect(internal.connections).toBe(before.internal);
    },
  );

  it("a name resolving to the metadata address is refused", async () => {
    expect(await reason(safeFetch(`http://metadata.test:${P}/`, local()))).toBe("ADDRESS_BLOCKED");
  });

  it("an unknown name is DNS_FAILED", async () => {
    expect(await reason(safeFetch(`http://nowhere.test:${P}/`, local()))).toBe("DNS_FAILED");
  });
});

describe("schemes other than http(s) are refused before any I/O", () => {
  it.each([
    "file:///etc/passwd",
    "FiLe:///etc/passwd",
    "gopher://a.test:70/_GET",
    "ftp://a.test/x",
    "data:text/plain,hello",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "ws://a.test/",
  ])("%s", async (input) => {
    const before = plain.connections;
    expect(await reason(safeFetch(input, local()))).toBe("SCHEME_NOT_ALLOWED");
    expect(dns.calls).toEqual([]);
    expect(plain.connections).toBe(before);
  });

  it("plain http is refused unless allowed, in any case", async () => {
    const before = plain.connections;
    for (const scheme of ["http", "HTTP", "hTtP"]) {
      expect(await reason(safeFetch(`${scheme}://a.test:${P}/ok`, local({ allowHttp: false })))).toBe(
        "SCHEME_NOT_ALLOWED",
      );
    }
    expect(dns.calls).toEqual([]);
    expect(plain.connections).toBe(before);
  });

  it("ports outside the allowed list are refused before any I/O", async () => {
    expect(await reason(safeFetch(`https://safe.test:${S}/ok`, local({ allowedPorts: [443] })))).toBe(
      "PORT_NOT_ALLOWED",
    );
    expect(await reason(safeFetch(`https://safe.test:${S}/ok`, { lookup: dns.lookup, ca }))).toBe(
      "PORT_NOT_ALLOWED",
    );
    expect(dns.calls).toEqual([]);
  });
});

describe("URL parser confusion: one parse decides", () => {
  it("a backslash ends the authority: the host is the one before it", async () => {
    const res = await safeFetch(`http://a.test:${P}\\@internal.test:${P}/ok`, local());
    expect(res.status).toBe(404);
    await res.bytes();
    expect(dns.calls).toEqual(["a.test"]);
    expect(plain.requests.at(-1)?.url).toBe(`/@internal.test:${P}/ok`);
  });

  it("userinfo is refused, whichever side of @ looks like the host", async () => {
    expect(await reason(safeFetch(`http://a.test:${P}@internal.test:${P}/ok`, local()))).toBe(
      "USERINFO_NOT_ALLOWED",
    );
    expect(await reason(safeFetch(`http://user:secret@a.test:${P}/ok`, local()))).toBe(
      "USERINFO_NOT_ALLOWED",
    );
    expect(dns.calls).toEqual([]);
  });

  it("a trailing dot and percent-encoding name the same host for DNS and the Host header", async () => {
    const dotted = await safeFetch(`http://A.Test.:${P}/headers`, local());
    expect(JSON.parse(await dotted.text()).host).toBe(`a.test:${P}`);
    const encoded = await safeFetch(`http://%61.test:${P}/headers`, local());
    expect(JSON.parse(await encoded.text()).host).toBe(`a.test:${P}`);
    expect(dns.calls).toEqual(["a.test", "a.test"]);
  });
});

describe("redirects", () => {
  const redirect = (to: string, status = 302, host = `a.test:${P}`) =>
    `http://${host}/redirect?status=${status}&to=${encodeURIComponent(to)}`;

  it("are refused by default, blaming the redirect rather than the caller's URL", async () => {
    const e = await failure(safeFetch(redirect("/ok"), local()));
    expect(e).toMatchObject({ reason: "REDIRECT_REFUSED", hop: 1 });
    expect(safeFetchErrorToSpoolError(e, "source_url")).toBeInstanceOf(FailedPreconditionError);
  });

  it("are followed when allowed, each hop checked", async () => {
    const res = await safeFetch(redirect("/ok"), local({ maxRedirects: 2 }));
    expect(await res.text()).toBe("hello");
    expect(res.redirects).toBe(1);
    expect(res.url).toBe(`http://a.test:${P}/ok`);
  });

  it.each([
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.169.254:80/latest/meta-data/iam/security-credentials/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://0xa9fea9fe/",
    "http://metadata.test/",
  ])("a redirect to %s is refused", async (to) => {
    const e = await failure(safeFetch(redirect(to), local({ maxRedirects: 5 })));
    expect(e.reason).toBe("ADDRESS_BLOCKED");
    expect(e.hop).toBe(1);
  });

  it("a redirect to the internal server never connects to it", async () => {
    const before = internal.connections;
    expect(
      await reason(safeFetch(redirect(`http://internal.test:${P}/ok`), local({ maxRedirects: 5 }))),
    ).toBe("ADDRESS_BLOCKED");
    expect(await reason(safeFetch(redirect(`http://127.0.0.2:${P}/ok`), local({ maxRedirects: 5 })))).toBe(
      "ADDRESS_BLOCKED",
    );
    expect(internal.connections).toBe(before);
  });

  it.each(["file:///etc/passwd", "gopher://a.test/", "data:,x"])(
    "a redirect to %s is refused",
    async (to) => {
      expect(await failure(safeFetch(redirect(to), local({ maxRedirects: 5 })))).toMatchObject({
        reason: "SCHEME_NOT_ALLOWED",
        hop: 1,
      });
    },
  );

  it("stop at the hop limit", async () => {
    const loop = `http://a.test:${P}/redirect?to=${encodeURIComponent(`http://a.test:${P}/redirect?to=%2Fredirect`)}`;
    const before = plain.requests.length;
    expect(await failure(safeFetch(loop, local({ maxRedirects: 2 })))).toMatchObject({
      reason: "TOO_MANY_REDIRECTS",
      hop: 3,
    });
    expect(plain.requests.length - before).toBe(3);
  });

  it("drop credentials when the origin changes, and keep them dropped", async () => {
    const headers = {
      authorization: "Bearer secret-token",
      cookie: "sid=1",
      "x-api-key": "k",
      "x-trace": "t1",
    };
    const options = local({ maxRedirects: 3, headers, credentialHeaders: ["X-Api-Key"] });

    const same = await safeFetch(redirect("/headers"), options);
    expect(JSON.parse(await same.text())).toMatchObject({
      authorization: "Bearer secret-token",
      cookie: "sid=1",
    });

    const cross = await safeFetch(redirect(`http://b.test:${P}/headers`), options);
    const seen = JSON.parse(await cross.text());
    expect(seen).not.toHaveProperty("authorization");
    expect(seen).not.toHaveProperty("cookie");
    expect(seen).not.toHaveProperty("x-api-key");
    expect(seen["x-trace"]).toBe("t1");

    const back = await safeFetch(
      redirect(redirect(`http://a.test:${P}/headers`), 302, `b.test:${P}`),
      options,
    );
    // a.test -> b.test -> a.test: dropped at the first change of origin, not restored.
    expect(JSON.parse(await back.text())).not.toHaveProperty("authorization");
  });

  it("a port change is an origin change", async () => {
    const options = local({ maxRedirects: 3, headers: { authorization: "Bearer x" } });
    const res = await safeFetch(redirect(`https://safe.test:${S}/headers`), options);
    expect(JSON.parse(await res.text())).not.toHaveProperty("authorization");
  });

  it("303 turns a POST into a GET without body; 307 keeps both", async () => {
    const post = {
      method: "POST",
      body: "payload",
      headers: { "content-type": "text/plain" },
      maxRedirects: 2,
    };
    const seeOther = await safeFetch(redirect("/echo", 303), local(post));
    expect(JSON.parse(await seeOther.text())).toEqual({ method: "GET", body: "" });
    const temporary = await safeFetch(redirect("/echo", 307), local(post));
    expect(JSON.parse(await temporary.text())).toEqual({ method: "POST", body: "payload" });
  });

  it("https to http is refused even with http allowed", async () => {
    const before = plain.connections;
    const e = await failure(
      safeFetch(
        `https://safe.test:${S}/redirect?to=${encodeURIComponent(`http://a.test:${P}/ok`)}`,
        local({ maxRedirects: 3 }),
      ),
    );
    expect(e).toMatchObject({ reason: "INSECURE_REDIRECT", hop: 1 });
    expect(plain.connections).toBe(before);
  });
});

describe("TLS", () => {
  it("accepts a certificate from the given CA for the right name", async () => {
    const res = await safeFetch(`https://safe.test:${S}/ok`, local());
    expect(await res.text()).toBe("hello");
    const literal = await safeFetch(`https://127.0.0.1:${S}/ok`, local());
    expect(await literal.text()).toBe("hello");
  });

  it("refuses a certificate from an unknown CA", async () => {
    const { ca: _ca, ...noCa } = local();
    expect(await reason(safeFetch(`https://safe.test:${S}/ok`, noCa))).toBe("TLS_ERROR");
  });

  it("refuses a certificate for another name", async () => {
    expect(await reason(safeFetch(`https://wrong.test:${S}/ok`, local()))).toBe("TLS_ERROR");
  });

  it("refuses an invalid certificate even with NODE_TLS_REJECT_UNAUTHORIZED=0", async () => {
    const saved = process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";
    try {
      const { ca: _ca, ...noCa } = local();
      expect(await reason(safeFetch(`https://safe.test:${S}/ok`, noCa))).toBe("TLS_ERROR");
    } finally {
      if (saved === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
      else process.env.NODE_TLS_REJECT_UNAUTHORIZED = saved;
    }
  });
});

describe("response limits", () => {
  it("aborts a body mid-stream when it passes the size limit", async () => {
    const closedBefore = plain.closedEarly;
    const res = await safeFetch(`http://a.test:${P}/big`, local({ maxResponseBytes: 300_000 }));
    let received = 0;
    const e = await failure(
      (async () => {
        for await (const chunk of res.body) received += (chunk as Buffer).length;
      })(),
    );
    expect(e.reason).toBe("RESPONSE_TOO_LARGE");
    expect(received).toBeGreaterThan(0);
    expect(received).toBeLessThanOrEqual(300_000);
    await expect.poll(() => plain.closedEarly).toBe(closedBefore + 1);
  });

  it("refuses a declared Content-Length over the limit before reading", async () => {
    expect(
      await reason(safeFetch(`http://a.test:${P}/declared-big`, local({ maxResponseBytes: 1024 * 1024 }))),
    ).toBe("RESPONSE_TOO_LARGE");
  });

  it("times out a server that never answers", async () => {
    expect(await reason(safeFetch(`http://a.test:${P}/hang`, local({ timeoutMs: 300 })))).toBe("TIMEOUT");
  });

  it("times out a body that stalls", async () => {
    const res = await safeFetch(`http://a.test:${P}/stall-body`, local({ timeoutMs: 500 }));
    expect(res.status).toBe(200);
    expect(await reason(res.text())).toBe("TIMEOUT");
  });

  it("times out a connection that cannot be made", async () => {
    const e = await failure(
      safeFetch(
        `http://a.test:${P}/ok`,
        local({ lookup: () => new Promise(() => {}), connectTimeoutMs: 200 }),
      ),
    );
    expect(e.reason).toBe("TIMEOUT");
    expect(e.message).toContain("connect");
  });

  it("stops when the caller aborts", async () => {
    const controller = new AbortController();
    const pending = safeFetch(`http://a.test:${P}/hang`, local({ signal: controller.signal }));
    setTimeout(() => controller.abort(), 50);
    expect(await reason(pending)).toBe("ABORTED");
    expect(await reason(safeFetch(`http://a.test:${P}/ok`, local({ signal: AbortSignal.abort() })))).toBe(
      "ABORTED",
    );
  });

  it("decodes gzip within limits", async () => {
    const res = await safeFetch(`http://a.test:${P}/gzip`, local());
    expect(await res.text()).toBe("hello gzip");
  });

  it("refuses a gzip bomb by its ratio", async () => {
    const res = await safeFetch(
      `http://a.test:${P}/bomb`,
      local({ maxDecompressedBytes: 100 * 1024 * 1024 }),
    );
    const e = await failure(res.bytes());
    expect(e.reason).toBe("DECOMPRESSION_LIMIT");
    expect(e.message).toContain("100:1");
  });

  it("refuses a decoded body over the decompressed size limit", async () => {
    const res = await safeFetch(
      `http://a.test:${P}/bomb`,
      local({ maxDecompressionRatio: 10_000, maxDecompressedBytes: 2 * 1024 * 1024 }),
    );
    expect(await reason(res.bytes())).toBe("DECOMPRESSION_LIMIT");
  });

  it("reads a 204 as empty whatever its Content-Encoding", async () => {
    const res = await safeFetch(`http://a.test:${P}/no-content-gzip`, local());
    expect(res.status).toBe(204);
    expect(await res.text()).toBe("");
  });

  it("reports an undecodable body and a body cut short as PROTOCOL_ERROR", async () => {
    const notGzip = await safeFetch(`http://a.test:${P}/not-gzip`, local());
    expect(await reason(notGzip.bytes())).toBe("PROTOCOL_ERROR");
    const cut = await safeFetch(`http://a.test:${P}/cut-short`, local());
    expect(await reason(cut.bytes())).toBe("PROTOCOL_ERROR");
  });

  it("reports a refused connection as CONNECT_FAILED", async () => {
    const probe = http.createServer();
    probe.listen(0, "127.0.0.1");
    await once(probe, "listening");
    const closedPort = (probe.address() as AddressInfo).port;
    probe.close();
    await once(probe, "close");
    const options = local({ allowedPorts: [closedPort], unsafeAllowedTargets: [`127.0.0.1:${closedPort}`] });
    expect(await reason(safeFetch(`http://a.test:${closedPort}/`, options))).toBe("CONNECT_FAILED");
  });

  it("refuses stacked encodings", async () => {
    expect(await reason(safeFetch(`http://a.test:${P}/double-gzip`, local()))).toBe("UNSUPPORTED_ENCODING");
  });

  it("asks for identity and returns raw bytes when decompression is off", async () => {
    const headers = await safeFetch(`http://a.test:${P}/headers`, local({ decompress: false }));
    expect(JSON.parse(await headers.text())["accept-encoding"]).toBe("identity");
    const raw = await safeFetch(`http://a.test:${P}/gzip`, local({ decompress: false }));
    expect(Buffer.from(await raw.bytes()).equals(GZIP_HELLO)).toBe(true);
  });

  it("checks the content type of a successful response", async () => {
    const only = local({ allowedContentTypes: ["application/json"] });
    expect(await reason(safeFetch(`http://a.test:${P}/ok`, only))).toBe("CONTENT_TYPE_NOT_ALLOWED");
    const ok = await safeFetch(`http://a.test:${P}/headers`, only);
    expect(ok.headers.get("content-type")).toBe("application/json");
    await ok.bytes();
  });

  it("refuses client-owned headers and unusable options as programming errors", async () => {
    await expect(
      safeFetch(`http://a.test:${P}/ok`, local({ headers: { host: "evil.test" } })),
    ).rejects.toThrow(TypeError);
    await expect(safeFetch(`http://a.test:${P}/ok`, local({ method: "CONNECT" }))).rejects.toThrow(TypeError);
    await expect(
      safeFetch(`http://a.test:${P}/ok`, local({ unsafeAllowedTargets: ["127.0.0.0/8"] })),
    ).rejects.toThrow(TypeError);
  });
});
