import { describe, expect, it } from "vitest";
import {
  allowedType,
  declaredMismatch,
  detectContentType,
  OCTET_STREAM,
  TEXT_PLAIN,
} from "./content-type.js";
import { sanitiseDisplayName } from "./display-name.js";

describe("display names", () => {
  it("normalises, removes invisible and path characters, and cuts to the limit", () => {
    expect(sanitiseDisplayName("e\u0301t\u00e9.txt", 100)).toBe("\u00e9t\u00e9.txt");
    expect(sanitiseDisplayName("a\u202Egnp.exe", 100)).toBe("agnp.exe");
    expect(sanitiseDisplayName("..\\..\\windows/system32:x", 100)).toBe(".._.._windows_system32_x");
    expect(sanitiseDisplayName("a\uFF0Fb\u2215c", 100)).toBe("a_b_c");
    expect(sanitiseDisplayName("\u0000\u0007 ..  ", 100)).toBe("");
    expect(sanitiseDisplayName("😀😀😀", 2)).toBe("😀😀");
  });
});

describe("content types", () => {
  it("detects from the bytes, falling back to text or octet-stream", async () => {
    const png = Buffer.from("89504e470d0a1a0a0000000d49484452", "hex");
    expect(await detectContentType(png)).toBe("image/png");
    expect(await detectContentType(Buffer.from("héllo\n"))).toBe(TEXT_PLAIN);
    expect(await detectContentType(Buffer.from([0xff, 0xfe, 0x00, 0x01]))).toBe(OCTET_STREAM);
  });

  it("accepts a declared type only when it describes the bytes", () => {
    expect(declaredMismatch("", "image/png")).toBeUndefined();
    expect(declaredMismatch("IMAGE/PNG", "image/png")).toBeUndefined();
    expect(declaredMismatch("image/jpg", "image/jpeg")).toBeUndefined();
    expect(declaredMismatch("application/json", TEXT_PLAIN)).toBeUndefined();
    expect(declaredMismatch("application/ld+json", TEXT_PLAIN)).toBeUndefined();
    expect(declaredMismatch("image/png", TEXT_PLAIN)).toMatch(/declared image\/png/);
    expect(declaredMismatch("text/plain", "application/x-elf")).toMatch(/application\/x-elf/);
  });

  it("applies the allow-list with families and a wildcard", () => {
    expect(allowedType(["image/*"], "image/png")).toBe(true);
    expect(allowedType(["image/png"], "image/gif")).toBe(false);
    expect(allowedType(["*"], "application/x-elf")).toBe(true);
    expect(allowedType(["text/plain"], "application/x-elf")).toBe(false);
  });
});
