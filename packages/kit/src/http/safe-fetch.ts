// The one HTTP client for URLs a user supplies (DESIGN.md §7 SSRF).
//
// Transport: node:http / node:https with a per-request `lookup`. Node calls
// that lookup when it opens the socket and connects to exactly the addresses
// it returns, so the addresses validated are the addresses connected to: there
// is no resolve-then-connect window for DNS rebinding. Every record of an
// answer is validated and one blocked record refuses the whole request (a
// mixed answer is an attack or a misconfiguration, never something to pick
// through). IP literals, which Node connects to without a lookup, are judged
// before any I/O (target.ts). Each request gets its own agent (no pooled
// socket is ever reused across checks) and no proxy is ever used (a proxy
// would resolve the name itself).
import { Buffer } from "node:buffer";
import type { LookupAddress } from "node:dns";
import { lookup as dnsLookup } from "node:dns/promises";
import * as http from "node:http";
import * as https from "node:https";
import { isIP, type LookupFunction, type Socket } from "node:net";
import { pipeline, Readable, Transform, type TransformCallback } from "node:stream";
import * as zlib from "node:zlib";
import { canonicalAddress } from "./address-policy.js";
import { SafeFetchError, SsrfRefusedError } from "./errors.js";
import { assertAddressAllowed, resolveTarget, type Target, type TargetPolicy, targetKey } from "./target.js";

/** Resolves a host name to every address it has (tests inject one; the default is the system resolver). */
export type SafeLookup = (hostname: string) => Promise<ReadonlyArray<{ address: string; family: number }>>;

export interface SafeFetchOptions {
  /** HTTP method (default GET). CONNECT and TRACE are refused. */
  method?: string;
  /** Request headers. Host, Connection, Content-Length, Transfer-Encoding, Accept-Encoding and other hop-by-hop headers are set by the client and refused here. */
  headers?: Readonly<Record<string, string>>;
  /** Request body; replayable so a 307/308 redirect can resend it. */
  body?: string | Uint8Array;
  /** Allow plain http (default false: https only). Even then an https URL never redirects to http. */
  allowHttp?: boolean;
  /** Ports that may be connected to (default [443], plus 80 when allowHttp). */
  allowedPorts?: readonly number[];
  /** Redirects to follow (default 0: a redirect is refused). Each hop is checked like the first URL. */
  maxRedirects?: number;
  /** Extra header names (besides Authorization, Proxy-Authorization, Cookie) dropped when a redirect changes origin. */
  credentialHeaders?: readonly string[];
  /** Bytes accepted on the wire for the response body (default 10 MiB). */
  maxResponseBytes?: number;
  /** Decode gzip, deflate and br responses (default true; false sends Accept-Encoding: identity and returns bytes as received). */
  decompress?: boolean;
  /** Bytes a decoded body may grow to (default 10 MiB). */
  maxDecompressedBytes?: number;
  /** Decoded:encoded ratio refused once the decoded body passes 1 MiB (default 100). */
  maxDecompressionRatio?: number;
  /** Whole exchange, all redirects and reading the body included (default 30 s). */
  timeoutMs?: number;
  /** Resolving and connecting (TCP and TLS handshake) each hop (default 10 s). */
  connectTimeoutMs?: number;
  /** Media types a 2xx response may have (lowercase, no parameters); unset = any. */
  allowedContentTypes?: readonly string[];
  /** Aborts the exchange (reason ABORTED). */
  signal?: AbortSignal;
  /** Resolver (default: the system resolver, every address). */
  lookup?: SafeLookup;
  /** Trusted CA certificates (PEM), replacing the default roots (add tls.rootCertificates to keep them). Certificates are always verified; invalid ones are always refused. */
  ca?: string | Buffer | ReadonlyArray<string | Buffer>;
  /**
   * UNSAFE — tests and local development only, never from user input. Exact
   * "address:port" targets ("127.0.0.1:8443", "[::1]:8443") exempt from the
   * blocked address ranges. Nothing else is exempt: not another port, not
   * another notation of the same address (::ffff:127.0.0.1 is not 127.0.0.1).
   */
  unsafeAllowedTargets?: readonly string[];
}

export interface SafeResponse {
  status: number;
  headers: Headers;
  /** The final URL, after redirects. */
  url: string;
  /** Redirects followed. */
  redirects: number;
  /** The body, decoded and with every limit enforced while it streams; read it once. */
  body: Readable;
  bytes(): Promise<Uint8Array>;
  text(): Promise<string>;
  /** Discards the body and releases the connection. */
  cancel(): void;
}

const MiB = 1024 * 1024;

export const SAFE_FETCH_DEFAULTS = {
  allowHttp: false,
  httpsPorts: [443],
  httpPorts: [80],
  maxRedirects: 0,
  maxResponseBytes: 10 * MiB,
  maxDecompressedBytes: 10 * MiB,
  maxDecompressionRatio: 100,
  /** Decoded bytes below which the ratio is not checked (small bodies compress very well). */
  decompressionRatioGraceBytes: 1 * MiB,
  timeoutMs: 30_000,
  connectTimeoutMs: 10_000,
  /** Node's limit for the whole response header section. */
  maxHeaderBytes: 16 * 1024,
} as const;

const ALWAYS_CREDENTIAL_HEADERS = ["authorization", "proxy-authorization", "cookie"];
const CLIENT_OWNED_HEADERS = new Set([
  "host",
  "connection",
  "keep-alive",
  "content-length",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "expect",
  "accept-encoding",
  "proxy-connection",
]);
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

interface Settings extends TargetPolicy {
  method: string;
  headers: Record<string, string>;
  body: Buffer | undefined;
  maxRedirects: number;
  credentialHeaders: ReadonlySet<string>;
  maxResponseBytes: number;
  decompress: boolean;
  maxDecompressedBytes: number;
  maxDecompressionRatio: number;
  timeoutMs: number;
  connectTimeoutMs: number;
  allowedContentTypes: ReadonlySet<string> | undefined;
  lookup: SafeLookup;
  ca: Array<string | Buffer> | undefined;
}

/**
 * Fetches a user-supplied URL under the SSRF policy (docs/SECURITY.md,
 * "SSRF-safe HTTP client"). Resolves once the final response's headers are in;
 * the body streams afterwards under the size, decompression and time limits.
 * Fails with SsrfRefusedError (policy) or SafeFetchError (exchange), each with
 * a stable `reason`. Programming errors in `options` throw TypeError.
 */
export async function safeFetch(input: string, options: SafeFetchOptions = {}): Promise<SafeResponse> {
  const settings = resolveSettings(options);
  const exchange = new Exchange(settings, options.signal);
  try {
    let target = resolveTarget(input, settings, 0);
    let method = settings.method;
    let body = settings.body;
    const headers = { ...settings.headers };
    for (let hop = 0; ; hop++) {
      exchange.throwIfDone(hop, target.host);
      const res = await exchange.send(target, method, headers, body, hop);
      const location = res.headers.location;
      if (!REDIRECT_STATUSES.has(res.statusCode ?? 0) || location === undefined) {
        return exchange.respond(res, target, hop, method);
      }
      res.destroy();
      if (settings.maxRedirects === 0) {
        throw new SsrfRefusedError(
          "REDIRECT_REFUSED",
          "the server answered with a redirect; redirects are off",
          // The refused request is the redirect's: hop + 1, so the caller's URL is not blamed.
          { hop: hop + 1, host: target.host },
        );
      }
      if (hop + 1 > settings.maxRedirects) {
        throw new SsrfRefusedError("TOO_MANY_REDIRECTS", `more than ${settings.maxRedirects} redirects`, {
          hop: hop + 1,
          host: target.host,
        });
      }
      const next = resolveTarget(location, settings, hop + 1, target.url);
      if (target.protocol === "https:" && next.protocol === "http:") {
        throw new SsrfRefusedError("INSECURE_REDIRECT", "a redirect from https to http is refused", {
          hop: hop + 1,
          host: next.host,
        });
      }
      if (next.origin !== target.origin) {
        // Like browsers: credentials meant for one origin never follow a
        // redirect to another, and stay dropped for the rest of the chain.
        for (const name of Object.keys(headers)) {
          if (settings.credentialHeaders.has(name)) delete headers[name];
        }
      }
      const status = res.statusCode ?? 0;
      if (status === 303 ? method !== "HEAD" : (status === 301 || status === 302) && method === "POST") {
        method = "GET";
        body = undefined;
        delete headers["content-type"];
      }
      target = next;
    }
  } catch (error) {
    exchange.finish();
    throw error;
  }
}

function resolveSettings(o: SafeFetchOptions): Settings {
  const allowHttp = o.allowHttp ?? SAFE_FETCH_DEFAULTS.allowHttp;
  const method = (o.method ?? "GET").toUpperCase();
  if (!TOKEN.test(method) || method === "CONNECT" || method === "TRACE") {
    throw new TypeError(`safeFetch: method ${JSON.stringify(o.method)} is not allowed`);
  }
  const headers: Record<string, string> = {};
  for (const [rawName, value] of Object.entries(o.headers ?? {})) {
    const name = rawName.toLowerCase();
    http.validateHeaderName(name);
    http.validateHeaderValue(name, value);
    if (CLIENT_OWNED_HEADERS.has(name) || name.startsWith("proxy-")) {
      throw new TypeError(`safeFetch: header ${name} is set by the client`);
    }
    headers[name] = value;
  }
  const ports = o.allowedPorts ?? [
    ...SAFE_FETCH_DEFAULTS.httpsPorts,
    ...(allowHttp ? SAFE_FETCH_DEFAULTS.httpPorts : []),
  ];
  for (const p of ports) {
    if (!Number.isInteger(p) || p < 1 || p > 65_535) throw new TypeError(`safeFetch: port ${p} is invalid`);
  }
  const unsafeAllowedTargets = new Set<string>();
  for (const entry of o.unsafeAllowedTargets ?? []) {
    const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(entry);
    const canonical = m ? canonicalAddress(m[1] ?? m[2] ?? "") : undefined;
    if (!m || canonical === undefined) {
      throw new TypeError(
        `safeFetch: unsafeAllowedTargets entry ${JSON.stringify(entry)} is not address:port`,
      );
    }
    unsafeAllowedTargets.add(targetKey(canonical, Number(m[3])));
  }
  const positive = (name: string, value: number | undefined, fallback: number, min = 1): number => {
    const v = value ?? fallback;
    if (!Number.isFinite(v) || v < min) throw new TypeError(`safeFetch: ${name} must be a number ≥ ${min}`);
    return v;
  };
  return {
    allowHttp,
    allowedPorts: new Set(ports),
    unsafeAllowedTargets,
    method,
    headers,
    body: o.body === undefined ? undefined : Buffer.from(o.body),
    maxRedirects: Math.floor(positive("maxRedirects", o.maxRedirects, SAFE_FETCH_DEFAULTS.maxRedirects, 0)),
    credentialHeaders: new Set([
      ...ALWAYS_CREDENTIAL_HEADERS,
      ...(o.credentialHeaders ?? []).map((h) => h.toLowerCase()),
    ]),
    maxResponseBytes: positive("maxResponseBytes", o.maxResponseBytes, SAFE_FETCH_DEFAULTS.maxResponseBytes),
    decompress: o.decompress ?? true,
    maxDecompressedBytes: positive(
      "maxDecompressedBytes",
      o.maxDecompressedBytes,
      SAFE_FETCH_DEFAULTS.maxDecompressedBytes,
    ),
    maxDecompressionRatio: positive(
      "maxDecompressionRatio",
      o.maxDecompressionRatio,
      SAFE_FETCH_DEFAULTS.maxDecompressionRatio,
    ),
    timeoutMs: positive("timeoutMs", o.timeoutMs, SAFE_FETCH_DEFAULTS.timeoutMs),
    connectTimeoutMs: positive("connectTimeoutMs", o.connectTimeoutMs, SAFE_FETCH_DEFAULTS.connectTimeoutMs),
    allowedContentTypes: o.allowedContentTypes
      ? new Set(o.allowedContentTypes.map((t) => t.toLowerCase()))
      : undefined,
    lookup: o.lookup ?? systemLookup,
    ca: o.ca === undefined ? undefined : Array.isArray(o.ca) ? [...o.ca] : [o.ca as string | Buffer],
  };
}

async function systemLookup(hostname: string): Promise<LookupAddress[]> {
  return dnsLookup(hostname, { all: true, order: "verbatim" });
}

/** One safeFetch call: its deadline, its cancellation and the request or body currently open. */
class Exchange {
  #failure: SafeFetchError | undefined;
  #current: { destroy(error: Error): void } | undefined;
  readonly #timer: NodeJS.Timeout;
  readonly #onAbort: () => void;
  #hop = 0;
  #host: string | undefined;

  constructor(
    private readonly settings: Settings,
    private readonly signal: AbortSignal | undefined,
  ) {
    this.#timer = setTimeout(
      () => this.fail("TIMEOUT", `no complete response within ${settings.timeoutMs} ms`),
      settings.timeoutMs,
    );
    this.#timer.unref();
    this.#onAbort = () => this.fail("ABORTED", "the request was aborted");
    if (signal?.aborted) this.#onAbort();
    else signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Ends the exchange (deadline or caller's abort): the open request or response is destroyed with the failure. */
  fail(reason: "TIMEOUT" | "ABORTED", message: string): void {
    if (this.#failure) return;
    this.#failure = new SafeFetchError(reason, message, {
      hop: this.#hop,
      ...(this.#host === undefined ? {} : { host: this.#host }),
    });
    this.#current?.destroy(this.#failure);
    this.finish();
  }

  /** Releases the timer and the abort listener (the exchange is over, however it ended). */
  finish(): void {
    clearTimeout(this.#timer);
    this.signal?.removeEventListener("abort", this.#onAbort);
  }

  throwIfDone(hop: number, host: string): void {
    this.#hop = hop;
    this.#host = host;
    if (this.#failure) throw this.#failure;
  }

  /** Sends one request and resolves with its response head. */
  send(
    target: Target,
    method: string,
    headers: Record<string, string>,
    body: Buffer | undefined,
    hop: number,
  ): Promise<http.IncomingMessage> {
    const s = this.settings;
    return new Promise((resolve, reject) => {
      const fail = (error: unknown) => reject(this.#failure ?? toFetchError(error, target, hop));
      const requestHeaders: Record<string, string> = {
        ...headers,
        "accept-encoding": s.decompress ? "gzip, deflate, br" : "identity",
      };
      if (body) requestHeaders["content-length"] = String(body.length);
      const secure = target.protocol === "https:";
      const agent = secure ? new https.Agent({ keepAlive: false }) : new http.Agent({ keepAlive: false });
      const requestOptions: https.RequestOptions = {
        host: target.host,
        port: target.port,
        path: `${target.url.pathname}${target.url.search}`,
        method,
        headers: requestHeaders,
        agent,
        lookup: guardedLookup(target, s, hop),
        maxHeaderSize: SAFE_FETCH_DEFAULTS.maxHeaderBytes,
        insecureHTTPParser: false,
      };
      if (secure) {
        // Always verified, whatever NODE_TLS_REJECT_UNAUTHORIZED says.
        requestOptions.rejectUnauthorized = true;
        if (s.ca) requestOptions.ca = s.ca;
        if (!target.literal) requestOptions.servername = target.host;
      }
      let req: http.ClientRequest;
      try {
        req = (secure ? https : http).request(requestOptions);
      } catch (error) {
        agent.destroy();
        fail(error);
        return;
      }
      this.#current = req;
      req.on("socket", (socket: Socket) => {
        if (!socket.connecting) return;
        const timer = setTimeout(
          () =>
            req.destroy(
              new SafeFetchError("TIMEOUT", `could not connect within ${s.connectTimeoutMs} ms`, {
                hop,
                host: target.host,
              }),
            ),
          s.connectTimeoutMs,
        );
        const connected = () => clearTimeout(timer);
        socket.once(secure ? "secureConnect" : "connect", connected);
        socket.once("close", connected);
      });
      req.on("error", (error) => {
        agent.destroy();
        fail(error);
      });
      req.on("response", (res) => {
        res.once("close", () => agent.destroy());
        this.#current = res;
        resolve(res);
      });
      if (this.#failure) req.destroy(this.#failure);
      req.end(body);
    });
  }

  /** Wraps the final response: content checks now, size and decompression limits as the body streams. */
  respond(res: http.IncomingMessage, target: Target, hop: number, method: string): SafeResponse {
    const s = this.settings;
    const status = res.statusCode ?? 0;
    const failWith = (reason: SafeFetchError["reason"], message: string): never => {
      res.destroy();
      throw new SafeFetchError(reason, message, { hop, host: target.host });
    };
    const declared = res.headers["content-length"];
    if (declared !== undefined && /^\d+$/.test(declared) && Number(declared) > s.maxResponseBytes) {
      failWith("RESPONSE_TOO_LARGE", `the response declares more than ${s.maxResponseBytes} bytes`);
    }
    if (s.allowedContentTypes && status >= 200 && status < 300) {
      const mediaType = (res.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
      if (!s.allowedContentTypes.has(mediaType)) {
        failWith(
          "CONTENT_TYPE_NOT_ALLOWED",
          `content type ${mediaType.slice(0, 100) || "(none)"} is not allowed`,
        );
      }
    }
    let decoder: Transform | undefined;
    // These carry no body whatever their Content-Encoding says (an empty gzip stream is not valid gzip).
    const bodiless =
      method === "HEAD" || status === 204 || status === 304 || res.headers["content-length"] === "0";
    if (s.decompress && !bodiless) {
      const encodings = (res.headers["content-encoding"] ?? "")
        .split(",")
        .map((e) => e.trim().toLowerCase())
        .filter((e) => e !== "" && e !== "identity");
      // One encoding at most: stacked encodings multiply a bomb's ratio.
      if (encodings.length > 1) failWith("UNSUPPORTED_ENCODING", "more than one content encoding");
      const encoding = encodings[0];
      if (encoding === "gzip" || encoding === "x-gzip") decoder = zlib.createGunzip();
      else if (encoding === "deflate") decoder = zlib.createInflate();
      else if (encoding === "br") decoder = zlib.createBrotliDecompress();
      else if (encoding !== undefined)
        failWith("UNSUPPORTED_ENCODING", `content encoding ${encoding.slice(0, 40)} is not supported`);
    }

    let wireBytes = 0;
    let decodedBytes = 0;
    const wireLimit = new Transform({
      transform(chunk: Buffer, _enc, callback: TransformCallback) {
        wireBytes += chunk.length;
        if (wireBytes > s.maxResponseBytes) {
          callback(
            new SafeFetchError(
              "RESPONSE_TOO_LARGE",
              `the response is larger than ${s.maxResponseBytes} bytes`,
              {
                hop,
                host: target.host,
              },
            ),
          );
        } else callback(null, chunk);
      },
    });
    const decodedLimit = new Transform({
      transform(chunk: Buffer, _enc, callback: TransformCallback) {
        decodedBytes += chunk.length;
        const tooBig = decodedBytes > s.maxDecompressedBytes;
        const ratio =
          decodedBytes > SAFE_FETCH_DEFAULTS.decompressionRatioGraceBytes &&
          decodedBytes > s.maxDecompressionRatio * Math.max(wireBytes, 1);
        if (tooBig || ratio) {
          callback(
            new SafeFetchError(
              "DECOMPRESSION_LIMIT",
              tooBig
                ? `the decoded response is larger than ${s.maxDecompressedBytes} bytes`
                : `the response expands more than ${s.maxDecompressionRatio}:1`,
              { hop, host: target.host },
            ),
          );
        } else callback(null, chunk);
      },
    });
    const stages: NodeJS.ReadWriteStream[] = decoder ? [wireLimit, decoder, decodedLimit] : [wireLimit];
    const tail = pipeline(res, ...(stages as [Transform]), () => {}) as unknown as Readable;
    const exchange = this;
    async function* guarded(): AsyncGenerator<Buffer> {
      try {
        for await (const chunk of tail) yield chunk as Buffer;
      } catch (error) {
        throw exchange.#failure ?? toFetchError(error, target, hop, decoder !== undefined);
      } finally {
        tail.destroy();
        res.destroy();
        exchange.finish();
      }
    }
    const body = Readable.from(guarded(), { objectMode: false });
    // Destroying the source (not the wrapper) also wakes a read that is
    // waiting on a stalled server, so a deadline ends even an idle body.
    this.#current = res;
    const bytes = async (): Promise<Uint8Array> => {
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    };
    const headers = new Headers();
    for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
      try {
        headers.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!);
      } catch {
        // A header the Fetch Headers class cannot hold is left out rather than failing the response.
      }
    }
    return {
      status,
      headers,
      url: target.url.href,
      redirects: hop,
      body,
      bytes,
      text: async () => new TextDecoder().decode(await bytes()),
      cancel: () => {
        res.destroy();
        body.destroy();
      },
    };
  }
}

/**
 * The socket's lookup: resolves, refuses the whole request if ANY record is
 * blocked, and hands Node only validated addresses to connect to.
 */
function guardedLookup(target: Target, s: Settings, hop: number): LookupFunction {
  return (_hostname, options, callback) => {
    const family = options.family === 4 || options.family === 6 ? options.family : 0;
    validatedAddresses(target, s, hop, family).then(
      (usable) =>
        // Called outside the promise chain, as dns.lookup would call it.
        process.nextTick(() => {
          if (options.all) (callback as (e: null, a: LookupAddress[]) => void)(null, usable);
          else
            (callback as (e: null, a: string, f: number) => void)(
              null,
              usable[0]!.address,
              usable[0]!.family,
            );
        }),
      (error: unknown) => process.nextTick(() => callback(error as NodeJS.ErrnoException, "", 0)),
    );
  };
}

async function validatedAddresses(
  target: Target,
  s: Settings,
  hop: number,
  family: 0 | 4 | 6,
): Promise<LookupAddress[]> {
  const where = { hop, host: target.host };
  let records: ReadonlyArray<{ address: string; family: number }>;
  try {
    records = await s.lookup(target.host);
  } catch {
    throw new SafeFetchError("DNS_FAILED", `host ${target.host} could not be resolved`, where);
  }
  if (records.length === 0)
    throw new SafeFetchError("DNS_FAILED", `host ${target.host} has no address`, where);
  // Every record is checked, and the first blocked one refuses them all.
  for (const record of records) assertAddressAllowed(record.address, target.port, s, hop, target.host);
  const usable = records
    .map((r) => ({ address: r.address, family: isIP(r.address) }))
    .filter((r) => family === 0 || r.family === family);
  if (usable.length === 0) {
    throw new SafeFetchError("DNS_FAILED", `host ${target.host} has no usable address`, where);
  }
  return usable;
}

const TLS_CODE = /CERT|SSL|TLS|SELF_SIGNED|VERIFY|ALTNAME|ISSUER/;

/** Maps a transport error to a typed failure; never passes a library's text to the caller. */
function toFetchError(error: unknown, target: Target, hop: number, decoding = false): SafeFetchError {
  if (error instanceof SafeFetchError) return error;
  const where = { hop, host: target.host };
  const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : "";
  if (code.startsWith("ERR_STREAM_PREMATURE_CLOSE") || code === "ECONNRESET" || code === "ECONNABORTED") {
    return new SafeFetchError(
      "PROTOCOL_ERROR",
      "the connection closed before the response was complete",
      where,
    );
  }
  if (code.startsWith("Z_") || (decoding && code.startsWith("ERR_"))) {
    return new SafeFetchError("PROTOCOL_ERROR", "the response body could not be decoded", where);
  }
  if (target.protocol === "https:" && TLS_CODE.test(code)) {
    return new SafeFetchError("TLS_ERROR", `the TLS certificate of ${target.host} was not accepted`, where);
  }
  if (code.startsWith("HPE_") || code.startsWith("ERR_HTTP")) {
    return new SafeFetchError("PROTOCOL_ERROR", "the server's response is not valid HTTP", where);
  }
  return new SafeFetchError("CONNECT_FAILED", `could not connect to ${target.host}`, where);
}
