// The name rules on their own: what each spelling becomes or why it is refused.
import { describe, expect, it } from "vitest";
import { type ArchiveRefusalReason, ArchiveRefusedError, DEFAULT_ARCHIVE_LIMITS } from "./archive.js";
import { checkEntryName, displayName, NameRegistry } from "./names.js";

function reasonOf(run: () => unknown): ArchiveRefusalReason | "accepted" {
  try {
    run();
    return "accepted";
  } catch (error) {
    if (error instanceof ArchiveRefusedError) return error.reason;
    throw error;
  }
}

const check = (name: string, directory = false) => checkEntryName(name, directory, DEFAULT_ARCHIVE_LIMITS);

describe("checkEntryName", () => {
  it.each([
    ["a/b/c.txt", ["a", "b", "c.txt"], false],
    ["./a//b/./c.txt", ["a", "b", "c.txt"], false],
    ["dir/", ["dir"], true],
    ["cafe\u0301.txt", ["caf\u00e9.txt"], false],
    ["...hidden", ["...hidden"], false],
    ["console.log", ["console.log"], false],
    ["COM10", ["COM10"], false],
    ["what?.txt", ["what?.txt"], false],
  ] as const)("%s is accepted as %o", (name, segments, directory) => {
    expect(check(name)).toEqual({ segments, directory });
  });

  it.each([
    ["/abs", "ABSOLUTE_PATH"],
    ["\\abs", "ABSOLUTE_PATH"],
    ["\\\\?\\C:\\x", "UNC_PATH"],
    ["/\\server\\x", "UNC_PATH"],
    ["Z:", "DRIVE_PATH"],
    ["a/b\\c", "BACKSLASH"],
    ["a\uFE68b", "BACKSLASH"],
    ["a\uFF3Cb", "BACKSLASH"],
    ["..", "PARENT_SEGMENT"],
    ["a/\uFF0E\uFF0E/b", "PARENT_SEGMENT"],
    ["x\u2024\u2024/y", "RESERVED_NAME"],
    ["\u2025/y", "PARENT_SEGMENT"],
    ["name\uFF0E", "RESERVED_NAME"],
    ["con", "RESERVED_NAME"],
    ["CONIN$", "RESERVED_NAME"],
    ["lpt\u00B9.txt", "RESERVED_NAME"],
    ["x/AUX.tar.gz/y", "RESERVED_NAME"],
    ["nul .txt", "RESERVED_NAME"],
    ["a\u0000b", "FORBIDDEN_CHARACTER"],
    ["a\u001Fb", "FORBIDDEN_CHARACTER"],
    ["a\u007Fb", "FORBIDDEN_CHARACTER"],
    ["a\u0085b", "FORBIDDEN_CHARACTER"],
    ["a\u200Fb", "FORBIDDEN_CHARACTER"],
    ["a\u2028b", "FORBIDDEN_CHARACTER"],
    ["a\uFFFDb", "FORBIDDEN_CHARACTER"],
    ["a:b", "DRIVE_PATH"],
    ["ab:c", "FORBIDDEN_CHARACTER"],
    ["", "CORRUPT"],
    ["./", "accepted"],
    [`${"é".repeat(128)}`, "NAME_TOO_LONG"],
    [`${"é".repeat(127)}`, "accepted"],
  ] as const)("%s → %s", (name, reason) => {
    expect(reasonOf(() => check(name, name.endsWith("/")))).toBe(reason);
  });

  it("counts a nested archive's path in the path limit", () => {
    const limits = { maxPathBytes: 12, maxSegmentBytes: 255 };
    expect(checkEntryName("abc", false, limits, ["nest.zip"]).segments).toEqual(["abc"]);
    expect(reasonOf(() => checkEntryName("abcd", false, limits, ["nest.zip"]))).toBe("NAME_TOO_LONG");
  });

  it("refuses a huge name before normalising it", () => {
    expect(reasonOf(() => check("a".repeat(1024 * 4 + 1)))).toBe("NAME_TOO_LONG");
  });
});

describe("NameRegistry", () => {
  it("accepts a directory named again in the same spelling, files in it, and distinct names", () => {
    const names = new NameRegistry();
    names.register(["a", "b.txt"], false, "a/b.txt");
    names.register(["a"], true, "a/");
    names.register(["a"], true, "a/");
    names.register(["a", "c.txt"], false, "a/c.txt");
    names.register(["b"], false, "b");
    expect(reasonOf(() => names.register(["a", "B.TXT"], false, "a/B.TXT"))).toBe("DUPLICATE_NAME");
    expect(reasonOf(() => names.register(["A", "d.txt"], false, "A/d.txt"))).toBe("DUPLICATE_NAME");
    expect(reasonOf(() => names.register(["b", "x"], false, "b/x"))).toBe("DUPLICATE_NAME");
    expect(reasonOf(() => names.register(["a"], false, "a"))).toBe("DUPLICATE_NAME");
  });

  it("lets a nested archive's file become its directory", () => {
    const names = new NameRegistry();
    names.register(["n.zip"], false, "n.zip");
    expect(reasonOf(() => names.register(["n.zip", "x"], false, "n.zip/x"))).toBe("DUPLICATE_NAME");
    names.becomeDirectory(["n.zip"]);
    names.register(["n.zip", "x"], false, "n.zip/x");
  });
});

describe("displayName", () => {
  it("escapes controls and bidi characters and cuts long names", () => {
    expect(displayName("a\u0000b\u202Ec\n")).toBe("a\\u{0}b\\u{202E}c\\u{A}");
    expect(displayName("x".repeat(500))).toHaveLength(200);
  });
});
