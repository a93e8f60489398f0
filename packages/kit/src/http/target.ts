// Turning a URL string into a target safeFetch may connect to, with every
// check that needs no I/O. URLs are parsed once, by the WHATWG URL parser (the
// one browsers use), and every later decision reads that parse: no second
// parser can see a different host in the same string. WHATWG already
// normalises IPv4 in every notation (127.1, 0x7f.1, 2130706433, 017700000001,
// 0, full-width digits, ideographic dots, percent-encoded octets) to dotted
// decimal, treats backslashes as slashes in http(s) and lowercases schemes.
import { isIP } from "node:net";
import { classifyAddress } from "./address-policy.js";
import { SsrfRefusedError } from "./errors.js";

export interface Target {
  url: URL;
  protocol: "http:" | "https:";
  /** Host to connect to and to name in Host/SNI: the WHATWG hostname, brackets and one trailing dot removed. */
  host: string;
  port: number;
  /** True when `host` is an IP address: Node connects to it without a lookup, so it was checked here. */
  literal: boolean;
  /** scheme://host:port, for deciding whether credentials may follow a redirect. */
  origin: string;
}

export interface TargetPolicy {
  allowHttp: boolean;
  allowedPorts: ReadonlySet<number>;
  /** Exact canonical "address:port" pairs exempt from the address ranges (tests and development only). */
  unsafeAllowedTargets: ReadonlySet<string>;
}

/** Parses `input` (relative to `base` for a redirect's Location) and applies every check that needs no I/O. */
export function resolveTarget(input: string, policy: TargetPolicy, hop: number, base?: URL): Target {
  let url: URL;
  try {
    url = base ? new URL(input, base) : new URL(input);
  } catch {
    throw new SsrfRefusedError("INVALID_URL", "not a valid absolute URL", { hop });
  }
  const protocol = url.protocol;
  if (protocol !== "https:" && !(protocol === "http:" && policy.allowHttp)) {
    // Named by its scheme only: the rest of a data:, javascript: or file: URL is not a host.
    throw new SsrfRefusedError(
      "SCHEME_NOT_ALLOWED",
      `scheme ${protocol.slice(0, 32)} is not allowed (${policy.allowHttp ? "http and https" : "https"} only)`,
      { hop },
    );
  }
  // Credentials in a URL are refused rather than stripped: a URL like
  // https://trusted.example@evil.example/ is an attempt to mislead a reader, and
  // silently dropping a password the user meant to send hides their mistake.
  if (url.username !== "" || url.password !== "") {
    throw new SsrfRefusedError("USERINFO_NOT_ALLOWED", "credentials in the URL (user@host) are not allowed", {
      hop,
      host: url.hostname,
    });
  }
  let host = url.hostname;
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  // "example.com." is the same name as "example.com"; one spelling is used for
  // resolution, SNI, the Host header and origin comparison.
  else if (host.endsWith(".")) host = host.slice(0, -1);
  if (host === "" || host.endsWith(".")) {
    throw new SsrfRefusedError("INVALID_URL", "the URL has no valid host", { hop });
  }
  const port = url.port === "" ? (protocol === "https:" ? 443 : 80) : Number(url.port);
  if (!policy.allowedPorts.has(port)) {
    throw new SsrfRefusedError("PORT_NOT_ALLOWED", `port ${port} is not allowed`, { hop, host });
  }
  // Node's net connects to anything isIP accepts without calling the lookup,
  // so exactly those hosts are judged here, before any I/O.
  const literal = isIP(host) !== 0;
  if (literal) assertAddressAllowed(host, port, policy, hop, host);
  return {
    url,
    protocol,
    host,
    port,
    literal,
    origin: `${protocol}//${literal && host.includes(":") ? `[${host}]` : host}:${port}`,
  };
}

/** Throws ADDRESS_BLOCKED unless `address` is globally routable or exactly allow-listed with `port`. */
export function assertAddressAllowed(
  address: string,
  port: number,
  policy: TargetPolicy,
  hop: number,
  host: string,
): void {
  const verdict = classifyAddress(address);
  if (verdict.allowed) return;
  if (policy.unsafeAllowedTargets.has(targetKey(verdict.address, port))) return;
  throw new SsrfRefusedError(
    "ADDRESS_BLOCKED",
    host === address || isIP(host) !== 0
      ? `address ${host} is not allowed (${describe(verdict)})`
      : // The resolved address is not repeated to the caller: it may be internal.
        `host ${host} resolves to an address that is not allowed`,
    { hop, host },
  );
}

/** The key `unsafeAllowedTargets` entries are compared by: canonical address and port. */
export function targetKey(canonical: string, port: number): string {
  return canonical.includes(":") ? `[${canonical}]:${port}` : `${canonical}:${port}`;
}

function describe(verdict: ReturnType<typeof classifyAddress>): string {
  return verdict.embedded
    ? `${verdict.embedded.form} form of ${verdict.embedded.range} ${verdict.embedded.address}`
    : verdict.range;
}
