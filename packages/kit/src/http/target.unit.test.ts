import { status as GrpcCode } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.js";
import { toGrpcStatus } from "../grpc/status.js";
import { SafeFetchError, SsrfRefusedError, safeFetchErrorToSpoolError } from "./errors.js";
import { resolveTarget, type TargetPolicy } from "./target.js";

const httpsOnly: TargetPolicy = {
  allowHttp: false,
  allowedPorts: new Set([443]),
  unsafeAllowedTargets: new Set(),
};
const withHttp: TargetPolicy = { ...httpsOnly, allowHttp: true, allowedPorts: new Set([80, 443]) };

function refusal(input: string, policy = withHttp): SsrfRefusedError {
  try {
    resolveTarget(input, policy, 0);
  } catch (e) {
    expect(e).toBeInstanceOf(SsrfRefusedError);
    return e as SsrfRefusedError;
  }
  throw new Error(`${input} was accepted`);
}

describe("resolveTarget: IP literals are judged without DNS", () => {
  it.each([
    ["http://127.1/", "127.0.0.1"],
    ["http://0x7f.1/", "127.0.0.1"],
    ["http://2130706433/", "127.0.0.1"],
    ["http://017700000001/", "127.0.0.1"],
    ["http://0/", "0.0.0.0"],
    ["http://0x7f000001/", "127.0.0.1"],
    ["http://127.0.0.1./", "127.0.0.1"],
    ["http://１２７．０．０．１/", "127.0.0.1"], // full-width digits and full stops
    ["http://127。0。0。1/", "127.0.0.1"], // ideographic full stops
    ["http://１２７。１/", "127.0.0.1"],
    ["http://%31%32%37.0.0.1/", "127.0.0.1"], // percent-encoded host
    ["http://169.254.169.254/latest/meta-data/", "169.254.169.254"],
    ["http://0251.0376.0251.0376/", "169.254.169.254"],
    ["http://[::]/", "::"],
    ["http://[::1]/", "::1"],
    ["http://[::ffff:7f00:1]/", "::ffff:7f00:1"],
    ["http://[::ffff:127.0.0.1]/", "::ffff:7f00:1"],
    ["http://[0:0:0:0:0:ffff:127.0.0.1]/", "::ffff:7f00:1"],
    ["http://[::127.0.0.1]/", "::7f00:1"],
    ["http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::a9fe:a9fe"],
    ["http://[64:ff9b::169.254.169.254]/", "64:ff9b::a9fe:a9fe"],
    ["http://[2002:7f00:1::]/", "2002:7f00:1::"],
    ["http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "2001:0:4136:e378:8000:63bf:80ff:fffe"],
    ["http://[fd00::1]/", "fd00::1"],
    ["http://[fe80::1]/", "fe80::1"],
    ["HTTP://127.1/", "127.0.0.1"],
  ])("%s (%s) is refused as ADDRESS_BLOCKED", (input, host) => {
    const e = refusal(input);
    expect(e.reason).toBe("ADDRESS_BLOCKED");
    expect(e.host).toBe(host);
    expect(e.hop).toBe(0);
  });

  it("accepts a public literal, so the refusals above are about the address", () => {
    expect(resolveTarget("http://8.8.8.8/", withHttp, 0)).toMatchObject({ host: "8.8.8.8", literal: true });
    expect(resolveTarget("https://[2606:4700:4700::1111]/", httpsOnly, 0)).toMatchObject({
      host: "2606:4700:4700::1111",
      literal: true,
      origin: "https://[2606:4700:4700::1111]:443",
    });
    expect(resolveTarget("http://134744072/", withHttp, 0)).toMatchObject({ host: "8.8.8.8" });
  });

  it("exempts exactly an allow-listed address and port, in no other notation", () => {
    const policy = {
      ...withHttp,
      allowedPorts: new Set([8080, 8081]),
      unsafeAllowedTargets: new Set(["127.0.0.1:8080"]),
    };
    expect(resolveTarget("http://127.0.0.1:8080/", policy, 0).host).toBe("127.0.0.1");
    expect(resolveTarget("http://127.1:8080/", policy, 0).host).toBe("127.0.0.1"); // same address once parsed
    expect(refusal("http://127.0.0.1:8081/", policy).reason).toBe("ADDRESS_BLOCKED");
    expect(refusal("http://127.0.0.2:8080/", policy).reason).toBe("ADDRESS_BLOCKED");
    expect(refusal("http://[::ffff:127.0.0.1]:8080/", policy).reason).toBe("ADDRESS_BLOCKED");
  });
});

describe("resolveTarget: schemes, userinfo, ports and parser confusion", () => {
  it.each([
    "file:///etc/passwd",
    "FILE:///etc/passwd",
    "fIlE://localhost/etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "ftp://example.com/x",
    "data:text/plain,hello",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "ws://example.com/",
    "blob:https://example.com/uuid",
    "dict://127.0.0.1:11211/stat",
  ])("%s is refused as SCHEME_NOT_ALLOWED", (input) => {
    expect(refusal(input).reason).toBe("SCHEME_NOT_ALLOWED");
  });

  it("refuses http unless allowed, and reads mixed-case schemes as their lowercase", () => {
    expect(refusal("http://example.com/", httpsOnly).reason).toBe("SCHEME_NOT_ALLOWED");
    expect(refusal("HtTp://example.com/", httpsOnly).reason).toBe("SCHEME_NOT_ALLOWED");
    expect(resolveTarget("HtTpS://Example.COM/a", httpsOnly, 0)).toMatchObject({
      protocol: "https:",
      host: "example.com",
      port: 443,
    });
  });

  it.each([
    "https://user:pass@example.com/",
    "https://user@example.com/",
    "https://:pass@example.com/",
    "https://example.com@127.0.0.1/",
    "https://127.0.0.1:443@example.com/",
    "https://example.com%40127.0.0.1@evil.example/",
  ])("%s is refused as USERINFO_NOT_ALLOWED", (input) => {
    expect(refusal(input, httpsOnly).reason).toBe("USERINFO_NOT_ALLOWED");
  });

  it("reads a backslash as a path separator, the way the request is sent", () => {
    // Host is example.com; "@127.0.0.1" is in the path, not userinfo.
    const target = resolveTarget("https://example.com\\@127.0.0.1/", httpsOnly, 0);
    expect(target.host).toBe("example.com");
    expect(target.url.pathname).toBe("/@127.0.0.1/");
    // And the other way round, the literal is the host and is refused.
    expect(refusal("https://127.0.0.1\\@example.com/", httpsOnly).reason).toBe("ADDRESS_BLOCKED");
    expect(resolveTarget("https:\\\\example.com\\x", httpsOnly, 0).host).toBe("example.com");
  });

  it("uses one spelling of a name: lowercase, punycode, percent-decoded, one trailing dot removed", () => {
    expect(resolveTarget("https://Example.COM./x", httpsOnly, 0)).toMatchObject({
      host: "example.com",
      origin: "https://example.com:443",
    });
    expect(resolveTarget("https://ex%61mple.com/", httpsOnly, 0).host).toBe("example.com");
    expect(resolveTarget("https://bücher.example/", httpsOnly, 0).host).toBe("xn--bcher-kva.example");
    expect(refusal("https://example.com../", httpsOnly).reason).toBe("INVALID_URL");
  });

  it.each([
    "not a url",
    "https://",
    "//example.com/",
    "https://exa mple.com/",
    "https://[::1/",
    "https://%00/",
  ])("%j is refused as INVALID_URL", (input) => {
    expect(refusal(input, httpsOnly).reason).toBe("INVALID_URL");
  });

  it("allows only the configured ports, the default port included", () => {
    expect(refusal("https://example.com:8443/", httpsOnly).reason).toBe("PORT_NOT_ALLOWED");
    expect(refusal("https://example.com:80/", httpsOnly).reason).toBe("PORT_NOT_ALLOWED");
    expect(resolveTarget("https://example.com:443/", httpsOnly, 0).port).toBe(443);
    expect(resolveTarget("http://example.com/", withHttp, 0).port).toBe(80);
    expect(refusal("http://example.com:0/", withHttp).reason).toBe("PORT_NOT_ALLOWED");
  });

  it("resolves a redirect's Location against the current URL", () => {
    const base = new URL("https://example.com/a/b");
    expect(resolveTarget("../c", httpsOnly, 1, base).url.href).toBe("https://example.com/c");
    expect(resolveTarget("//other.example/x", httpsOnly, 1, base).host).toBe("other.example");
    const e = (() => {
      try {
        resolveTarget("//169.254.169.254/", httpsOnly, 2, base);
      } catch (err) {
        return err as SsrfRefusedError;
      }
    })();
    expect(e).toMatchObject({ reason: "ADDRESS_BLOCKED", hop: 2, host: "169.254.169.254" });
  });
});

describe("safeFetchErrorToSpoolError", () => {
  it("maps a refusal of the caller's URL to INVALID_ARGUMENT naming the field and reason", () => {
    const mapped = safeFetchErrorToSpoolError(
      new SsrfRefusedError("ADDRESS_BLOCKED", "address 127.0.0.1 is not allowed (loopback)", {
        host: "127.0.0.1",
      }),
      "source_url",
    );
    expect(mapped).toBeInstanceOf(InvalidArgumentError);
    expect((mapped as InvalidArgumentError).violations).toEqual([
      { field: "source_url", description: "ADDRESS_BLOCKED: address 127.0.0.1 is not allowed (loopback)" },
    ]);
    expect(toGrpcStatus(mapped).code).toBe(GrpcCode.INVALID_ARGUMENT);
  });

  it("maps what the remote did to FAILED_PRECONDITION with the reason", () => {
    const hop = safeFetchErrorToSpoolError(
      new SsrfRefusedError("ADDRESS_BLOCKED", "address 169.254.169.254 is not allowed", { hop: 1 }),
    );
    expect(hop).toBeInstanceOf(FailedPreconditionError);
    expect(hop.message).toContain("ADDRESS_BLOCKED");
    expect(hop.message).toContain("after 1 redirect");
    const big = safeFetchErrorToSpoolError(new SafeFetchError("RESPONSE_TOO_LARGE", "too large"));
    expect(big).toBeInstanceOf(FailedPreconditionError);
    const status = toGrpcStatus(big);
    expect(status.code).toBe(GrpcCode.FAILED_PRECONDITION);
    expect(status.details).toContain("RESPONSE_TOO_LARGE");
  });
});
