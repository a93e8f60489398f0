import { describe, expect, it } from "vitest";
import { canonicalAddress, classifyAddress } from "./address-policy.js";

describe("classifyAddress", () => {
  it.each([
    ["127.0.0.1", "loopback"],
    ["127.255.255.254", "loopback"],
    ["10.1.2.3", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.255", "private"],
    ["192.168.0.1", "private"],
    ["169.254.169.254", "linkLocal"],
    ["100.64.0.1", "carrierGradeNat"],
    ["100.127.255.255", "carrierGradeNat"],
    ["0.0.0.0", "unspecified"],
    ["0.1.2.3", "unspecified"],
    ["255.255.255.255", "broadcast"],
    ["224.0.0.1", "multicast"],
    ["239.255.255.250", "multicast"],
    ["240.0.0.1", "reserved"],
    ["192.0.0.170", "reserved"],
    ["192.0.2.1", "reserved"],
    ["198.51.100.7", "reserved"],
    ["203.0.113.9", "reserved"],
    ["198.18.0.1", "reserved"],
    ["192.88.99.1", "reserved"],
  ])("refuses IPv4 %s (%s)", (address, range) => {
    expect(classifyAddress(address)).toMatchObject({ allowed: false, range });
  });

  it.each(["8.8.8.8", "1.1.1.1", "93.184.215.14", "100.63.255.255", "100.128.0.0", "172.32.0.1", "11.0.0.1"])(
    "allows public IPv4 %s",
    (address) => {
      expect(classifyAddress(address)).toMatchObject({ allowed: true, range: "unicast" });
    },
  );

  it.each([
    ["::", "unspecified"],
    ["::1", "loopback"],
    ["fe80::1", "linkLocal"],
    ["fc00::1", "uniqueLocal"],
    ["fd12:3456::1", "uniqueLocal"],
    ["ff02::1", "multicast"],
    ["fec0::1", "deprecatedSiteLocal"],
    ["2001:db8::1", "reserved"],
    ["3fff::1", "reserved"],
    ["100::1", "discard"],
    ["2001:2::1", "benchmarking"],
    ["4000::1", "nonGlobal"],
    ["::2:0:1", "nonGlobal"],
  ])("refuses IPv6 %s (%s)", (address, range) => {
    expect(classifyAddress(address)).toMatchObject({ allowed: false, range });
  });

  it.each([
    // IPv4-mapped, dotted and hex.
    ["::ffff:127.0.0.1", "ipv4Mapped", "loopback", "127.0.0.1"],
    ["::ffff:7f00:1", "ipv4Mapped", "loopback", "127.0.0.1"],
    ["::ffff:a9fe:a9fe", "ipv4Mapped", "linkLocal", "169.254.169.254"],
    ["::ffff:10.0.0.1", "ipv4Mapped", "private", "10.0.0.1"],
    ["0:0:0:0:0:ffff:c0a8:0101", "ipv4Mapped", "private", "192.168.1.1"],
    // IPv4-translated (RFC 6145).
    ["::ffff:0:7f00:1", "ipv4Translated", "loopback", "127.0.0.1"],
    // NAT64 well-known prefix.
    ["64:ff9b::a9fe:a9fe", "nat64", "linkLocal", "169.254.169.254"],
    ["64:ff9b::127.0.0.1", "nat64", "loopback", "127.0.0.1"],
    ["64:ff9b::a00:1", "nat64", "private", "10.0.0.1"],
    // 6to4.
    ["2002:7f00:1::", "6to4", "loopback", "127.0.0.1"],
    ["2002:a9fe:a9fe::1", "6to4", "linkLocal", "169.254.169.254"],
    ["2002:c0a8:101::", "6to4", "private", "192.168.1.1"],
  ])("refuses %s: %s form of %s %s", (address, form, range, v4) => {
    const verdict = classifyAddress(address);
    expect(verdict.allowed).toBe(false);
    expect(verdict.embedded).toEqual({
      form: form === "ipv4Translated" ? "rfc6145" : form,
      address: v4,
      range,
    });
  });

  it.each([
    // Always refused, whatever they embed.
    ["::127.0.0.1", "ipv4Compatible"],
    ["::7f00:1", "ipv4Compatible"],
    ["::8.8.8.8", "ipv4Compatible"],
    ["64:ff9b:1::808:808", "nat64LocalUse"],
    ["64:ff9b:1:abcd::1", "nat64LocalUse"],
    ["2001:0:4136:e378:8000:63bf:80ff:fffe", "teredo"],
    ["2001:0:4136:e378:8000:63bf:f7f7:f7f7", "teredo"],
  ])("refuses %s (%s) outright", (address, range) => {
    expect(classifyAddress(address)).toMatchObject({ allowed: false, range });
  });

  it("names the Teredo client an address would reach", () => {
    // Client 127.0.0.1 is stored inverted: ~0x7f00 = 0x80ff, ~0x0001 = 0xfffe.
    expect(classifyAddress("2001:0:4136:e378:8000:63bf:80ff:fffe").embedded).toEqual({
      form: "teredo",
      address: "127.0.0.1",
      range: "loopback",
    });
  });

  it.each([
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
  ])("allows global IPv6 %s", (address) => {
    expect(classifyAddress(address).allowed).toBe(true);
  });

  it.each([
    "example.com",
    "127.1",
    "0x7f.0.0.1",
    "2130706433",
    "",
    "1.2.3.4.5",
    "[::1",
    "::1%eth0",
    "fe80::1%lo",
  ])("refuses %j, which is not a strict IP address", (input) => {
    expect(classifyAddress(input)).toMatchObject({ allowed: false });
  });

  it("gives one canonical text per address", () => {
    expect(canonicalAddress("127.0.0.1")).toBe("127.0.0.1");
    expect(canonicalAddress("[0:0::1]")).toBe("::1");
    expect(canonicalAddress("::ffff:127.0.0.1")).toBe("::ffff:7f00:1");
    expect(canonicalAddress("127.1")).toBeUndefined();
  });
});
