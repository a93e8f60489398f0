// Which IP addresses an outbound request to a user-supplied URL may reach.
// The policy is an allowlist: only globally routable unicast addresses pass.
// Range membership comes from ipaddr.js (maintained special-range tables);
// this file only decides which of its range names are acceptable and where an
// IPv6 address carries an IPv4 host that must be judged instead.
import { isIP } from "node:net";
import ipaddr from "ipaddr.js";

export interface AddressVerdict {
  allowed: boolean;
  /** The address in canonical form (dotted IPv4, RFC 5952 IPv6). */
  address: string;
  /** ipaddr.js range name of the address, or a form this module names ("ipv4Compatible", "nonGlobal"). */
  range: string;
  /** The IPv4 host an IPv6 form routes to (mapped, translated, NAT64, 6to4, Teredo), when it has one. */
  embedded?: { form: string; address: string; range: string };
}

// 2000::/3 is the only IPv6 space IANA allocates as global unicast; anything
// outside it that ipaddr.js still calls "unicast" is unallocated or reserved.
const GLOBAL_UNICAST_V6 = ipaddr.IPv6.parseCIDR("2000::/3");
// RFC 4291 deprecated IPv4-compatible addresses (::a.b.c.d); :: and ::1 are
// matched earlier as unspecified and loopback.
const IPV4_COMPATIBLE = ipaddr.IPv6.parseCIDR("::/96");
// RFC 6052 well-known NAT64 prefix: DNS64 resolvers synthesise these for
// IPv4-only hosts, so they are judged by the IPv4 host they reach. The
// local-use prefix 64:ff9b:1::/48 (RFC 8215) is operator-defined and never
// globally reachable: refused whole.
const NAT64_WELL_KNOWN = ipaddr.IPv6.parseCIDR("64:ff9b::/96");

/**
 * Classifies an IP address (strict notation as `net.isIP` accepts it:
 * dotted-decimal IPv4 or IPv6). Anything that is not an IP address is refused.
 */
export function classifyAddress(address: string): AddressVerdict {
  const parsed = parseStrict(address);
  if (!parsed) return { allowed: false, address, range: "invalid" };
  return parsed.kind() === "ipv4" ? classifyV4(parsed as ipaddr.IPv4) : classifyV6(parsed as ipaddr.IPv6);
}

/**
 * Parses an address in strict notation. IPv6 text goes through the WHATWG URL
 * parser first: ipaddr.js reads the deprecated "::a.b.c.d" as ::ffff:a.b.c.d
 * (IPv4-mapped) while the network stack reads it as ::a.b.c.d
 * (IPv4-compatible), so ipaddr.js only ever sees the hex form. Zone ids
 * ("fe80::1%eth0") are refused.
 */
function parseStrict(address: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  const bare = address.startsWith("[") && address.endsWith("]") ? address.slice(1, -1) : address;
  const version = isIP(bare);
  try {
    if (version === 4) return ipaddr.IPv4.parse(bare);
    if (version === 6) return ipaddr.IPv6.parse(new URL(`http://[${bare}]/`).hostname.slice(1, -1));
  } catch {
    // Not an address either parser accepts: refused below.
  }
  return undefined;
}

/** True when a request may connect to `address`. */
export function isAllowedAddress(address: string): boolean {
  return classifyAddress(address).allowed;
}

/** Canonical text of a strict IP address (for exact comparisons), or undefined when it is not one. */
export function canonicalAddress(address: string): string | undefined {
  return parseStrict(address)?.toString();
}

function classifyV4(ip: ipaddr.IPv4): AddressVerdict {
  // "unicast" is ipaddr.js's name for everything outside its special ranges
  // (unspecified 0/8, broadcast, multicast, link-local incl. 169.254.169.254,
  // loopback, CGNAT 100.64/10, RFC 1918, reserved incl. documentation and
  // benchmarking ranges and 240/4, AS112, AMT).
  const range = ip.range();
  return { allowed: range === "unicast", address: ip.toString(), range };
}

function classifyV6(ip: ipaddr.IPv6): AddressVerdict {
  const address = ip.toString();
  const range = ip.range();
  const last32 = () => v4FromParts(ip.parts[6]!, ip.parts[7]!);

  switch (range) {
    case "ipv4Mapped": // ::ffff:a.b.c.d, dotted or hex, reaches the IPv4 host directly
    case "rfc6145": // ::ffff:0:a.b.c.d, IPv4-translated
      return judgedByEmbedded(address, range, range, last32());
    case "rfc6052":
      if (ip.match(NAT64_WELL_KNOWN)) return judgedByEmbedded(address, range, "nat64", last32());
      return refusedWithEmbedded(address, "nat64LocalUse", "nat64LocalUse", undefined);
    case "6to4": // 2002:AABB:CCDD::/48 routes to a.b.c.d's 6to4 relay
      return judgedByEmbedded(address, range, "6to4", v4FromParts(ip.parts[1]!, ip.parts[2]!));
    case "teredo": {
      // Obsolete tunnelling: refused whole, but name the client it would reach
      // (the last 32 bits, inverted) so a log says what was attempted.
      const client = v4FromParts(~ip.parts[6]! & 0xffff, ~ip.parts[7]! & 0xffff);
      return refusedWithEmbedded(address, range, "teredo", client);
    }
    case "unicast":
      if (ip.match(IPV4_COMPATIBLE))
        return refusedWithEmbedded(address, "ipv4Compatible", "ipv4Compatible", last32());
      if (!ip.match(GLOBAL_UNICAST_V6)) return { allowed: false, address, range: "nonGlobal" };
      return { allowed: true, address, range };
    default:
      // unspecified, loopback, linkLocal, uniqueLocal (fc00::/7), multicast,
      // site-local, discard, benchmarking, documentation, ORCHID, AS112, AMT,
      // segment routing, reserved.
      return { allowed: false, address, range };
  }
}

function v4FromParts(high: number, low: number): ipaddr.IPv4 {
  return new ipaddr.IPv4([high >> 8, high & 0xff, low >> 8, low & 0xff]);
}

function judgedByEmbedded(address: string, range: string, form: string, v4: ipaddr.IPv4): AddressVerdict {
  const inner = classifyV4(v4);
  return {
    allowed: inner.allowed,
    address,
    range,
    embedded: { form, address: inner.address, range: inner.range },
  };
}

function refusedWithEmbedded(
  address: string,
  range: string,
  form: string,
  v4: ipaddr.IPv4 | undefined,
): AddressVerdict {
  if (!v4) return { allowed: false, address, range };
  const inner = classifyV4(v4);
  return { allowed: false, address, range, embedded: { form, address: inner.address, range: inner.range } };
}
