// The host a source fetch may connect to: the URL parsed once by the WHATWG
// parser, https only, no credentials, an allowed port, and every address the
// name resolves to allowed by the kit's SSRF address policy (an IP literal is
// judged without DNS). The addresses judged are handed to git pinned
// (http.curloptResolve), so git connects to exactly them.
import { lookup as dnsLookup } from "node:dns/promises";
import { isIP } from "node:net";
import { SourceFetchError } from "./types.js";

export interface TargetPolicy {
  allowedPorts: ReadonlySet<number>;
  /** The kit's SSRF address policy (isAllowedAddress). */
  addressAllowed: (address: string) => boolean;
  /** Exact "address:port" pairs exempt from the address policy: tests and local development only. */
  unsafeAllowedTargets: ReadonlySet<string>;
  /** Resolver (tests inject one); default: the system resolver, every address. */
  lookup?: (host: string) => Promise<readonly string[]>;
}

export interface ResolvedTarget {
  url: URL;
  /** Host as git and TLS see it (no brackets, no trailing dot). */
  host: string;
  port: number;
  /** Every address judged allowed; git connects to these only. */
  addresses: string[];
}

/** Checks that need no I/O; throws SourceFetchError. */
export function parseSourceUrl(input: string, policy: Pick<TargetPolicy, "allowedPorts">): URL {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new SourceFetchError("INVALID_URL", "not a valid absolute URL");
  }
  if (url.protocol !== "https:")
    throw new SourceFetchError("SCHEME_NOT_ALLOWED", "only https URLs are allowed");
  if (url.username || url.password)
    throw new SourceFetchError("USERINFO_NOT_ALLOWED", "credentials in the URL (user@host) are not allowed");
  if (url.hash) throw new SourceFetchError("INVALID_URL", "a fragment (#) is not allowed");
  const port = url.port === "" ? 443 : Number(url.port);
  if (!policy.allowedPorts.has(port))
    throw new SourceFetchError("PORT_NOT_ALLOWED", `port ${port} is not allowed`);
  const host = hostOf(url);
  // One spelling of the name everywhere: "example.com." would make curl miss
  // the pinned entry for "example.com" and resolve the name itself.
  if (url.hostname.endsWith(".")) url.hostname = host;
  return url;
}

function hostOf(url: URL): string {
  let host = url.hostname;
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  else if (host.endsWith(".")) host = host.slice(0, -1);
  if (!host || host.endsWith(".")) throw new SourceFetchError("INVALID_URL", "the URL has no valid host");
  return host;
}

export async function resolveTarget(input: string, policy: TargetPolicy): Promise<ResolvedTarget> {
  const url = parseSourceUrl(input, policy);
  const host = hostOf(url);
  const port = url.port === "" ? 443 : Number(url.port);
  let addresses: string[];
  if (isIP(host) !== 0) addresses = [host];
  else {
    try {
      addresses = [...(await (policy.lookup ?? systemLookup)(host))];
    } catch {
      throw new SourceFetchError("DNS_FAILED", `${host} does not resolve`);
    }
    if (addresses.length === 0) throw new SourceFetchError("DNS_FAILED", `${host} does not resolve`);
  }
  // One blocked record refuses the whole fetch: a mixed answer is an attack or a misconfiguration.
  for (const address of addresses) {
    const target = `${address.includes(":") ? `[${address}]` : address}:${port}`;
    if (!policy.unsafeAllowedTargets.has(target) && !policy.addressAllowed(address))
      throw new SourceFetchError("ADDRESS_BLOCKED", `${host} resolves to an address that is not allowed`);
  }
  return { url, host, port, addresses };
}

async function systemLookup(host: string): Promise<string[]> {
  return (await dnsLookup(host, { all: true, verbatim: true })).map((a) => a.address);
}
