// Well-formed archives (zip from yazl, tar from tar-stream, tar.gz) are
// expanded exactly: nested folders, Unicode names, sizes and hashes, bytes
// on disk. Nested archives are expanded once and refused deeper. The target
// directory's rules: fresh or empty, emptied on refusal or abort.
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile, realpath, stat, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DEFAULT_ARCHIVE_LIMITS, type ExpandedEntry } from "./archive.js";
import { Expander, expandArchive } from "./expand.js";
import { buildZip, packTar, refusalOf, stored, type Workspace, workspace, yazlZip } from "./fixtures.test.js";

let ws: Workspace;
beforeEach(async () => {
  ws = await workspace();
});
afterEach(async () => {
  await ws.remove();
});

const sha256 = (bytes: Buffer | string) => createHash("sha256").update(bytes).digest("hex");

const big = randomBytes(300 * 1024);
const files: { name: string; content: Buffer | string }[] = [
  { name: "README.md", content: "# hello\n" },
  { name: "docs/résumé.txt", content: "naïve café\n" },
  { name: "docs/deep/er/still/here.json", content: '{"ok":true}' },
  { name: "日本語/ファイル.md", content: "テキスト" },
  { name: "emoji/😀 smile.txt", content: "🙂" },
  { name: "empty.txt", content: "" },
  { name: "bin/random.bin", content: big },
];
const expected: ExpandedEntry[] = files.map((f) => ({
  path: f.name.normalize("NFC"),
  size: Buffer.byteLength(f.content),
  sha256: sha256(f.content),
}));
const byPath = (a: ExpandedEntry, b: ExpandedEntry) => (a.path < b.path ? -1 : 1);

async function expectExpandedExactly(entries: ExpandedEntry[]) {
  expect([...entries].sort(byPath)).toEqual([...expected].sort(byPath));
  for (const f of files) {
    expect(await readFile(join(ws.target, f.name))).toEqual(Buffer.from(f.content));
  }
  expect(await ws.listTarget()).toEqual(
    [
      "README.md",
      "bin/",
      "bin/random.bin",
      "docs/",
      "docs/deep/",
      "docs/deep/er/",
      "docs/deep/er/still/",
      "docs/deep/er/still/here.json",
      "docs/résumé.txt",
      "emoji/",
      "emoji/😀 smile.txt",
      "empty.txt",
      "日本語/",
      "日本語/ファイル.md",
    ].sort(),
  );
  await ws.untouched();
}

describe("well-formed archives are expanded exactly", () => {
  it("zip (yazl), with directory entries", async () => {
    const zip = await yazlZip([{ name: "docs/" }, ...files]);
    const path = await ws.archive("good.zip", zip);
    await expectExpandedExactly(
      await expandArchive({ path, format: "zip" }, ws.target, DEFAULT_ARCHIVE_LIMITS),
    );
  });

  it("tar (tar-stream, pax headers for the Unicode names), with a leading ./ and directory entries", async () => {
    const tar = await packTar([
      { name: "./", type: "directory" },
      { name: "./docs", type: "directory" },
      ...files.map((f) => ({ name: `./${f.name}`, content: f.content })),
    ]);
    const path = await ws.archive("good.tar", tar);
    await expectExpandedExactly(await expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS));
  });

  it("tar.gz", async () => {
    const path = await ws.archive("good.tgz", gzipSync(await packTar(files)));
    await expectExpandedExactly(
      await expandArchive({ path, format: "tar.gz" }, ws.target, DEFAULT_ARCHIVE_LIMITS),
    );
  });

  it("files are created mode 0600 and directories 0700", async () => {
    const path = await ws.archive("good.zip", await yazlZip(files));
    await expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS);
    expect((await stat(join(ws.target, "README.md"))).mode & 0o777).toBe(0o600);
    expect((await stat(join(ws.target, "docs"))).mode & 0o777).toBe(0o700);
  });

  it("an empty zip expands to nothing", async () => {
    const path = await ws.archive("empty.zip", buildZip([]));
    expect(await expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS)).toEqual([]);
  });
});

describe("nested archives", () => {
  it("an archive inside the archive is replaced by a directory of its entries (depth 1)", async () => {
    const inner = await yazlZip([{ name: "inside/a.txt", content: "A" }]);
    const innerTgz = gzipSync(await packTar([{ name: "b.txt", content: "BB" }]));
    const outer = await yazlZip([
      { name: "top.txt", content: "top" },
      { name: "sub/inner.zip", content: inner },
      { name: "other.TGZ", content: innerTgz },
    ]);
    const path = await ws.archive("outer.zip", outer);
    const entries = await expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS);
    expect(entries).toEqual([
      { path: "top.txt", size: 3, sha256: sha256("top") },
      { path: "sub/inner.zip/inside/a.txt", size: 1, sha256: sha256("A") },
      { path: "other.TGZ/b.txt", size: 2, sha256: sha256("BB") },
    ]);
    expect(await ws.listTarget()).toEqual([
      "other.TGZ/",
      "other.TGZ/b.txt",
      "sub/",
      "sub/inner.zip/",
      "sub/inner.zip/inside/",
      "sub/inner.zip/inside/a.txt",
      "top.txt",
    ]);
  });

  it("an archive two levels deep is refused, naming it by its path", async () => {
    const innermost = await yazlZip([{ name: "deep.txt", content: "deep" }]);
    const middle = await packTar([{ name: "c.zip", content: innermost }]);
    const outer = await yazlZip([{ name: "b.tar", content: middle }]);
    const path = await ws.archive("outer.zip", outer);
    const refusal = await refusalOf(expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS));
    expect([refusal.reason, refusal.entry]).toEqual(["NESTING_TOO_DEEP", "b.tar/c.zip"]);
    expect(await ws.listTarget()).toEqual([]);
    await ws.untouched();
  });

  it("with maxNestingDepth 0 any nested archive is refused", async () => {
    const outer = await yazlZip([
      { name: "inner.zip", content: await yazlZip([{ name: "x", content: "x" }]) },
    ]);
    const path = await ws.archive("outer.zip", outer);
    const refusal = await refusalOf(
      expandArchive({ path }, ws.target, { ...DEFAULT_ARCHIVE_LIMITS, maxNestingDepth: 0 }),
    );
    expect([refusal.reason, refusal.entry]).toEqual(["NESTING_TOO_DEEP", "inner.zip"]);
    expect(await ws.listTarget()).toEqual([]);
  });

  it("a nested archive's entries obey the name rules and count against the limits", async () => {
    const evil = buildZip([stored("../../escape.txt", "x")]);
    const path = await ws.archive("outer.zip", await yazlZip([{ name: "evil.zip", content: evil }]));
    const refusal = await refusalOf(expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS));
    expect([refusal.reason, refusal.entry]).toEqual(["PARENT_SEGMENT", "evil.zip/../../escape.txt"]);
    expect(await ws.listTarget()).toEqual([]);
    await ws.untouched();

    const three = await yazlZip([0, 1, 2].map((i) => ({ name: `f${i}`, content: "x" })));
    const path2 = await ws.archive("outer2.zip", await yazlZip([{ name: "n.zip", content: three }]));
    const tooMany = await refusalOf(
      expandArchive({ path: path2 }, ws.target, { ...DEFAULT_ARCHIVE_LIMITS, maxEntries: 3 }),
    );
    expect(tooMany.reason).toBe("TOO_MANY_ENTRIES");
    expect(await ws.listTarget()).toEqual([]);
  });

  it("a nested archive colliding with an outer entry is refused", async () => {
    const inner = await yazlZip([{ name: "x.txt", content: "inner" }]);
    const outer = await yazlZip([
      { name: "n.zip", content: inner },
      { name: "N.ZIP/x.txt", content: "outer" },
    ]);
    const path = await ws.archive("outer.zip", outer);
    const refusal = await refusalOf(expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS));
    expect(refusal.reason).toBe("DUPLICATE_NAME");
  });

  it("archive bytes under another name, and a .zip name over other bytes, stay plain files", async () => {
    const inner = await yazlZip([{ name: "x.txt", content: "x" }]);
    const outer = await yazlZip([
      { name: "data.bin", content: inner },
      { name: "fake.zip", content: "not a zip at all" },
    ]);
    const path = await ws.archive("outer.zip", outer);
    const entries = await expandArchive({ path }, ws.target, {
      ...DEFAULT_ARCHIVE_LIMITS,
      maxNestingDepth: 0,
    });
    expect(entries.map((e) => [e.path, e.sha256])).toEqual([
      ["data.bin", sha256(inner)],
      ["fake.zip", sha256("not a zip at all")],
    ]);
  });
});

describe("the target directory", () => {
  it("is created when missing", async () => {
    const path = await ws.archive("a.zip", await yazlZip([{ name: "a.txt", content: "a" }]));
    const target = join(ws.target, "fresh");
    const entries = await expandArchive({ path }, target, DEFAULT_ARCHIVE_LIMITS);
    expect(entries.map((e) => e.path)).toEqual(["a.txt"]);
    expect(await readFile(join(target, "a.txt"), "utf8")).toBe("a");
  });

  it("must be empty, and a non-empty one is left as it was", async () => {
    await writeFile(join(ws.target, "keep.txt"), "mine");
    const path = await ws.archive("a.zip", buildZip([stored("../x", "x")]));
    await expect(expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS)).rejects.toThrow(/not empty/u);
    expect(await ws.listTarget()).toEqual(["keep.txt"]);
  });

  it("is emptied when the expansion is aborted", async () => {
    const path = await ws.archive("a.zip", await yazlZip(files));
    const controller = new AbortController();
    const reason = new Error("client went away");
    let seen = 0;
    const signal = new Proxy(controller.signal, {
      get(target, property) {
        // Abort once a few files are on disk.
        if (property === "throwIfAborted") {
          seen += 1;
          if (seen === 4) controller.abort(reason);
        }
        const value = Reflect.get(target, property, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    await expect(expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS, { signal })).rejects.toBe(reason);
    expect(await ws.listTarget()).toEqual([]);
  });

  it("never follows a link planted under the target (say, by another process)", async () => {
    const root = await realpath(ws.target);
    await symlink(ws.sibling, join(root, "a"));
    await symlink(join(ws.sibling, "f.txt"), join(root, "f.txt"));
    const expander = new Expander(root, DEFAULT_ARCHIVE_LIMITS, 1000, undefined);
    const level = { prefix: [], depth: 0, shownPrefix: "" };
    const bytes = async function* () {
      yield Buffer.from("x");
    };
    const intoLinkedDir = await refusalOf(
      expander.writeFile(level, { segments: ["a", "x.txt"], directory: false }, "a/x.txt", bytes()),
    );
    const ontoLinkedFile = await refusalOf(
      expander.writeFile(level, { segments: ["f.txt"], directory: false }, "f.txt", bytes()),
    );
    expect([intoLinkedDir.reason, ontoLinkedFile.reason]).toEqual(["LINK", "LINK"]);
    expect(await readdir(ws.sibling)).toEqual([]);
  });

  it("refuses limits that are not positive integers", async () => {
    const path = await ws.archive("a.zip", buildZip([]));
    await expect(
      expandArchive({ path }, ws.target, { ...DEFAULT_ARCHIVE_LIMITS, maxEntries: Number.NaN }),
    ).rejects.toThrow(RangeError);
  });
});
