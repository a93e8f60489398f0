import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  decodeManifest,
  diffManifests,
  encodeManifest,
  type ManifestEntry,
  ManifestError,
  manifestPathProblem,
  snapshotRef,
} from "./manifest.js";

const hashOf = (text: string) => createHash("sha256").update(text).digest("hex");
const entry = (path: string, content: string): ManifestEntry => ({
  path,
  size: Buffer.byteLength(content),
  sha256: hashOf(content),
});

describe("canonical manifest", () => {
  it("is one '<sha256> <size> <path>' line per file, sorted by UTF-8 path bytes", () => {
    // "Z" (0x5a) < "a" (0x61) < "é" (0xc3 0xa9) < "😀" (0xf0…) < "ｆ" (0xef…)? no: 0xef < 0xf0.
    const entries = [
      entry("é.txt", "1"),
      entry("a/b.txt", ""),
      entry("😀", "3"),
      entry("Z", "4"),
      entry("ｆ", "5"),
    ];
    const text = encodeManifest(entries).toString("utf8");
    expect(text).toBe(
      [
        `${hashOf("4")} 1 Z`,
        `${hashOf("")} 0 a/b.txt`,
        `${hashOf("1")} 1 é.txt`,
        `${hashOf("5")} 1 ｆ`,
        `${hashOf("3")} 1 😀`,
        "",
      ].join("\n"),
    );
    // JavaScript's UTF-16 order would put "😀" (a surrogate pair, 0xd83d) before "ｆ" (0xff46).
    expect(["ｆ", "😀"].sort()).toEqual(["😀", "ｆ"]);
  });

  it("gives the ref as sha256 of those bytes; stable for identical content in any order", () => {
    const a = [entry("x", "hello"), entry("dir/y", "world")];
    const ref = snapshotRef(a);
    expect(ref).toBe(hashOf(`${hashOf("world")} 5 dir/y\n${hashOf("hello")} 5 x\n`));
    expect(snapshotRef([...a].reverse())).toBe(ref);
    expect(snapshotRef([])).toBe(hashOf(""));
  });

  it("changes the ref with one byte of content or a renamed path", () => {
    const ref = snapshotRef([entry("x", "hello")]);
    expect(snapshotRef([entry("x", "hellp")])).not.toBe(ref);
    expect(snapshotRef([entry("y", "hello")])).not.toBe(ref);
  });

  it("refuses paths that are not canonical or safe, and duplicates", () => {
    for (const bad of [
      "",
      "/abs",
      "a//b",
      "a/./b",
      "../x",
      "a/..",
      "a\\b",
      "nl\nx",
      "nul\u0000",
      "bidi\u202e",
      "e\u0301",
    ]) {
      expect(manifestPathProblem(bad, 4096), JSON.stringify(bad)).toBeDefined();
    }
    expect(manifestPathProblem("a".repeat(11), 10)).toMatch(/longer/);
    expect(manifestPathProblem("dir/é.txt", 4096)).toBeUndefined();
    expect(() => encodeManifest([entry("a", "1"), entry("a", "2")])).toThrow(ManifestError);
    expect(() => encodeManifest([{ path: "a", size: -1, sha256: hashOf("") }])).toThrow(/bad size/);
    expect(() => encodeManifest([{ path: "a", size: 0, sha256: "ABC" }])).toThrow(/bad sha256/);
  });

  it("decodes its own bytes and refuses bytes that are not canonical", () => {
    const entries = [entry("a", "1"), entry("b/c", "22")];
    const bytes = encodeManifest(entries);
    expect(decodeManifest(bytes)).toEqual(entries);
    expect(decodeManifest(new Uint8Array())).toEqual([]);
    const swapped = Buffer.from(`${bytes.toString().split("\n").slice(0, 2).reverse().join("\n")}\n`);
    expect(() => decodeManifest(swapped)).toThrow(/canonical/);
    expect(() => decodeManifest(bytes.subarray(0, bytes.length - 1))).toThrow(/newline/);
    expect(() => decodeManifest(Buffer.from(`${hashOf("")} 01 a\n`))).toThrow(/malformed/);
  });
});

describe("diff between manifests", () => {
  const before = [entry("keep", "same"), entry("mod", "v1"), entry("gone", "x"), entry("resized", "ab")];
  const after = [entry("keep", "same"), entry("mod", "v2"), entry("new/file", "n"), entry("resized", "abc")];
  const sorted = (list: ManifestEntry[]) => decodeManifest(encodeManifest(list));

  it("lists exactly the added, modified and removed paths, in path order", () => {
    const changes = diffManifests(sorted(before), sorted(after));
    expect(changes.map((c) => [c.kind, c.entry.path])).toEqual([
      ["removed", "gone"],
      ["modified", "mod"],
      ["added", "new/file"],
      ["modified", "resized"],
    ]);
    const mod = changes.find((c) => c.entry.path === "mod");
    expect(mod?.kind === "modified" && mod.previous.sha256).toBe(hashOf("v1"));
    expect(mod?.entry.sha256).toBe(hashOf("v2"));
  });

  it("is empty between identical manifests", () => {
    expect(diffManifests(sorted(after), sorted(after))).toEqual([]);
  });

  it("without an earlier manifest lists every path as added", () => {
    const changes = diffManifests(undefined, sorted(after));
    expect(changes.every((c) => c.kind === "added")).toBe(true);
    expect(changes.map((c) => c.entry.path)).toEqual(["keep", "mod", "new/file", "resized"]);
  });
});
