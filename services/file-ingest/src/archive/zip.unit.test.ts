// Hostile zips, each built byte by byte, each refused with its typed reason
// naming the entry; after every refusal the target is empty and nothing
// exists outside it (parent and sibling directory checked).
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type ArchiveLimits, type ArchiveRefusalReason, DEFAULT_ARCHIVE_LIMITS } from "./archive.js";
import { expandArchive } from "./expand.js";
import {
  buildZip,
  deflated,
  localHeader,
  type RawZipEntry,
  refusalOf,
  stored,
  type Workspace,
  workspace,
  yazlZip,
} from "./fixtures.test.js";

let ws: Workspace;
beforeEach(async () => {
  ws = await workspace();
});
afterEach(async () => {
  await ws.remove();
});

async function expectRefused(
  zip: Buffer,
  reason: ArchiveRefusalReason,
  entry: string | RegExp,
  limits: Partial<ArchiveLimits> = {},
) {
  const path = await ws.archive("a.zip", zip);
  const refusal = await refusalOf(
    expandArchive({ path }, ws.target, { ...DEFAULT_ARCHIVE_LIMITS, ...limits }),
  );
  expect({ reason: refusal.reason, entry: refusal.entry }).toEqual({
    reason,
    entry: typeof entry === "string" ? entry : expect.stringMatching(entry),
  });
  expect(await ws.listTarget()).toEqual([]);
  await ws.untouched();
  return refusal;
}

const ok = (name = "ok.txt") => stored(name, "fine");

describe("zip paths", () => {
  it.each([
    ["/etc/passwd", "ABSOLUTE_PATH"],
    ["/", "ABSOLUTE_PATH"],
    ["C:/Windows/x.dll", "DRIVE_PATH"],
    ["c:x.txt", "DRIVE_PATH"],
    ["//server/share/x", "UNC_PATH"],
    ["a\\b.txt", "BACKSLASH"],
    ["../x.txt", "PARENT_SEGMENT"],
    ["a/../../x.txt", "PARENT_SEGMENT"],
    ["a/..", "PARENT_SEGMENT"],
    ["../outEvil/x.txt", "PARENT_SEGMENT"],
    ["‥/x.txt", "PARENT_SEGMENT"],
  ] as const)("%s → %s", async (name, reason) => {
    await expectRefused(buildZip([ok(), stored(name, "evil")]), reason, name);
  });

  it("a backslash path (UNC spelled with backslashes) is refused, even when yauzl would have turned it into slashes", async () => {
    await expectRefused(
      buildZip([stored("\\\\server\\share\\x", "evil")]),
      "UNC_PATH",
      "\\\\server\\share\\x",
    );
    await expectRefused(buildZip([stored("..\\..\\x", "evil")]), "BACKSLASH", "..\\..\\x");
  });

  it("a fullwidth solidus that NFKC turns into a separator is refused", async () => {
    await expectRefused(buildZip([stored("a／..／..／x", "evil")]), "PARENT_SEGMENT", "a／..／..／x");
  });
});

describe("zip characters and reserved names", () => {
  it.each([
    [Buffer.from("a\0b.txt"), "FORBIDDEN_CHARACTER", "a\\u{0}b.txt"],
    ["bell\u0007.txt", "FORBIDDEN_CHARACTER", "bell\\u{7}.txt"],
    ["line\nbreak.txt", "FORBIDDEN_CHARACTER", "line\\u{A}break.txt"],
    ["invoice\u202Etxt.exe", "FORBIDDEN_CHARACTER", "invoice\\u{202E}txt.exe"],
    ["isolate\u2066.txt", "FORBIDDEN_CHARACTER", "isolate\\u{2066}.txt"],
    ["stream.txt:hidden", "FORBIDDEN_CHARACTER", "stream.txt:hidden"],
    ["CON", "RESERVED_NAME", "CON"],
    ["docs/nul.txt", "RESERVED_NAME", "docs/nul.txt"],
    ["Com1.tar.gz", "RESERVED_NAME", "Com1.tar.gz"],
    ["LPT9", "RESERVED_NAME", "LPT9"],
    ["aux .txt", "RESERVED_NAME", "aux .txt"],
    ["trailing.", "RESERVED_NAME", "trailing."],
    ["dir /x.txt", "RESERVED_NAME", "dir /x.txt"],
  ] as const)("%s → %s", async (name, reason, shown) => {
    await expectRefused(buildZip([ok(), stored(name as string, "x", { name })]), reason, shown);
  });

  it("a UTF-8-flagged name that is not valid UTF-8 is refused", async () => {
    const refusal = await expectRefused(
      buildZip([stored("x", "x", { name: Buffer.from([0x61, 0xff, 0x62]), utf8: true })]),
      "FORBIDDEN_CHARACTER",
      /^a.b$/u,
    );
    expect(refusal.message).toContain("not valid UTF-8");
  });

  it("names longer than the segment and path limits are refused", async () => {
    await expectRefused(buildZip([stored(`${"s".repeat(256)}.txt`, "x")]), "NAME_TOO_LONG", /^s+/u);
    const deep = `${Array.from({ length: 11 }, () => "d".repeat(100)).join("/")}/x`;
    await expectRefused(buildZip([stored(deep, "x")]), "NAME_TOO_LONG", /^d+/u);
    await expectRefused(buildZip([stored("abcdef/x", "x")]), "NAME_TOO_LONG", "abcdef/x", {
      maxPathBytes: 7,
    });
  });
});

describe("zip duplicates", () => {
  it.each([
    ["same name twice", "a.txt", "a.txt"],
    ["case folding", "Readme.TXT", "README.txt"],
    ["NFC and NFD", "caf\u00e9.txt", "cafe\u0301.txt"],
    ["NFKC ligature", "\ufb01le.txt", "file.txt"],
    ["sharp s and ss", "stra\u00dfe.txt", "STRASSE.txt"],
    ["file then directory", "a", "a/b.txt"],
    ["directory then file", "a/b.txt", "a"],
    ["directory entry then file", "a/", "A"],
    ["directories differing in case", "Docs/x.txt", "docs/y.txt"],
  ])("%s: %s + %s → DUPLICATE_NAME", async (_what, first, second) => {
    const entry = (name: string) => (name.endsWith("/") ? stored(name, "") : stored(name, "x"));
    await expectRefused(buildZip([entry(first), entry(second)]), "DUPLICATE_NAME", second);
  });
});

describe("zip entry types", () => {
  it.each([
    [0o120777, "LINK"],
    [0o020644, "DEVICE"],
    [0o060644, "DEVICE"],
    [0o010644, "DEVICE"],
    [0o140644, "DEVICE"],
  ] as const)("Unix mode %o → %s", async (mode, reason) => {
    await expectRefused(
      buildZip([ok(), stored("special", "/etc/passwd", { unixMode: mode })]),
      reason,
      "special",
    );
  });

  it("a directory entry with data is refused", async () => {
    await expectRefused(buildZip([stored("d/", "data")]), "SIZE_MISMATCH", "d/");
  });
});

describe("zip headers", () => {
  it("a local header naming another file than the central directory is refused", async () => {
    await expectRefused(
      buildZip([ok(), stored("harmless.txt", "x", { localName: "../../evil.sh" })]),
      "HEADER_MISMATCH",
      "harmless.txt",
    );
  });

  it("a local header of the same length but other bytes is refused", async () => {
    await expectRefused(
      buildZip([stored("aaaa.txt", "x", { localName: "bbbb.txt" })]),
      "HEADER_MISMATCH",
      "aaaa.txt",
    );
  });

  it("local sizes, CRC-32 or method that disagree with the central directory are refused", async () => {
    await expectRefused(
      buildZip([stored("s.txt", "xyz", { localUncompressedSize: 1 })]),
      "HEADER_MISMATCH",
      "s.txt",
    );
    await expectRefused(buildZip([stored("c.txt", "xyz", { localCrc32: 1 })]), "HEADER_MISMATCH", "c.txt");
    await expectRefused(buildZip([deflated("m.txt", "xyz", { localMethod: 0 })]), "HEADER_MISMATCH", "m.txt");
  });
});

describe("zip overlap bombs", () => {
  it("two central records pointing at one local header (full overlap) are refused", async () => {
    const kernel = deflated("kernel", "A".repeat(1000));
    const zip = buildZip([
      kernel,
      { ...kernel, name: "copy", noLocal: true, pointAt: (offsets) => offsets[0] as number },
    ]);
    await expectRefused(zip, "OVERLAPPING_ENTRIES", /^(kernel|copy)$/u);
  });

  it("a local header quoted inside another entry's data is refused", async () => {
    const inner = stored("inner.txt", "payload");
    const quoted = Buffer.concat([localHeader(inner), inner.data as Buffer]);
    const outerName = "outer.bin";
    const zip = buildZip([
      stored(outerName, quoted),
      { ...inner, noLocal: true, pointAt: (offsets) => (offsets[0] as number) + 30 + outerName.length },
    ]);
    await expectRefused(zip, "OVERLAPPING_ENTRIES", /^(outer\.bin|inner\.txt)$/u);
  });

  it("an entry whose compressed size reaches into the central directory is refused", async () => {
    const entry = deflated("long.txt", "hello hello hello");
    const zip = buildZip([{ ...entry, compressedSize: (entry.data as Buffer).length + 20 }]);
    await expectRefused(zip, "OVERLAPPING_ENTRIES", "long.txt");
  });
});

describe("zip sizes and ratios", () => {
  const zeros = (n: number) => Buffer.alloc(n);

  it("an entry declaring a ratio over 100:1 beyond the grace size is refused before reading", async () => {
    await expectRefused(
      buildZip([deflated("zeros.bin", zeros(2 * 1024 * 1024))]),
      "RATIO_EXCEEDED",
      "zeros.bin",
    );
  });

  it("small entries under the grace size whose total ratio is over the limit are refused", async () => {
    const entries = [0, 1, 2].map((i) => deflated(`z${i}.bin`, zeros(900 * 1024)));
    await expectRefused(buildZip(entries), "RATIO_EXCEEDED", /^z\d\.bin$/u);
  });

  it("an entry within the grace size passes whatever its ratio", async () => {
    const path = await ws.archive("a.zip", buildZip([deflated("zeros.bin", zeros(512 * 1024))]));
    const entries = await expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS);
    expect(entries.map((e) => [e.path, e.size])).toEqual([["zeros.bin", 512 * 1024]]);
  });

  it("an entry inflating to more than it declares is stopped mid-stream and nothing stays behind", async () => {
    const zip = buildZip([ok("first.txt"), deflated("liar.bin", zeros(300_000), { uncompressedSize: 1000 })]);
    const refusal = await expectRefused(zip, "SIZE_MISMATCH", "liar.bin");
    expect(refusal.message).toContain("more bytes than the 1000 declared");
  });

  it("an entry inflating to fewer bytes than it declares is refused", async () => {
    await expectRefused(
      buildZip([deflated("short.bin", "abc", { uncompressedSize: 10 })]),
      "SIZE_MISMATCH",
      "short.bin",
    );
  });

  it("a stored entry whose sizes differ is refused", async () => {
    await expectRefused(
      buildZip([stored("s.bin", "abc", { uncompressedSize: 5 })]),
      "SIZE_MISMATCH",
      "s.bin",
    );
  });

  it("entries or total over the size limits are refused", async () => {
    const limits = { maxEntryBytes: 100, maxTotalBytes: 150 };
    await expectRefused(buildZip([stored("big.bin", zeros(101))]), "TOO_LARGE", "big.bin", limits);
    await expectRefused(
      buildZip([stored("a.bin", zeros(80)), stored("b.bin", zeros(80))]),
      "TOO_LARGE",
      "b.bin",
      limits,
    );
  });

  it("more entries than the limit are refused", async () => {
    const entries = [0, 1, 2, 3].map((i) => stored(`f${i}.txt`, "x"));
    await expectRefused(buildZip(entries), "TOO_MANY_ENTRIES", "", { maxEntries: 3 });
  });
});

describe("zip encryption, corruption and formats", () => {
  it("traditional encryption (flag bit 0) is refused", async () => {
    await expectRefused(
      buildZip([ok(), stored("secret.txt", "x", { flags: 0x1 })]),
      "ENCRYPTED",
      "secret.txt",
    );
  });

  it("AES (method 99 with extra field 0x9901) is refused", async () => {
    const aes = Buffer.from([0x01, 0x99, 7, 0, 2, 0, 0x41, 0x45, 3, 8, 0]);
    await expectRefused(
      buildZip([stored("aes.txt", "x", { method: 99, extra: aes })]),
      "ENCRYPTED",
      "aes.txt",
    );
  });

  it("an AES extra field alone is refused", async () => {
    const aes = Buffer.from([0x01, 0x99, 7, 0, 2, 0, 0x41, 0x45, 3, 0, 0]);
    await expectRefused(buildZip([stored("aes.txt", "x", { extra: aes })]), "ENCRYPTED", "aes.txt");
  });

  it("strong encryption (flag bit 6, refused by yauzl itself) is refused", async () => {
    await expectRefused(buildZip([stored("strong.txt", "x", { flags: 0x41 })]), "ENCRYPTED", "");
  });

  it("a CRC-32 that does not match the data is refused", async () => {
    await expectRefused(buildZip([stored("crc.txt", "data", { crc32: 1234 })]), "CORRUPT", "crc.txt");
  });

  it("deflate data that is not deflate is refused", async () => {
    const bad = { ...deflated("bad.bin", "hello"), data: Buffer.from([0xff, 0xff, 0xff, 0xff]) };
    await expectRefused(buildZip([bad]), "CORRUPT", "bad.bin");
  });

  it("an unsupported compression method is refused", async () => {
    await expectRefused(buildZip([stored("bz.bin", "x", { method: 12 })]), "UNSUPPORTED_FORMAT", "bz.bin");
  });

  it("a truncated zip is refused", async () => {
    const zip = await yazlZip([{ name: "a.txt", content: "hello" }]);
    await expectRefused(zip.subarray(0, zip.length - 10), "CORRUPT", "");
  });

  it("bytes that are no archive, or another format than declared, are refused", async () => {
    await expectRefused(Buffer.from("just text, not an archive"), "UNSUPPORTED_FORMAT", "");
    const path = await ws.archive("a.zip", await yazlZip([{ name: "a.txt", content: "x" }]));
    const refusal = await refusalOf(
      expandArchive({ path, format: "tar" }, ws.target, DEFAULT_ARCHIVE_LIMITS),
    );
    expect(refusal.reason).toBe("UNSUPPORTED_FORMAT");
  });
});

describe("zip accepted", () => {
  it("an entry under a data descriptor (flag bit 3) with zero local sizes is accepted", async () => {
    const plain = Buffer.from("streamed");
    const entry: RawZipEntry = {
      ...deflated("streamed.txt", plain),
      flags: 0x8,
      localCrc32: 0,
      localCompressedSize: 0,
      localUncompressedSize: 0,
    };
    // The descriptor after the data: signature, CRC-32, sizes.
    const descriptor = Buffer.alloc(16);
    descriptor.writeUInt32LE(0x08074b50, 0);
    descriptor.writeUInt32LE((entry.crc32 as number) >>> 0, 4);
    descriptor.writeUInt32LE((entry.data as Buffer).length, 8);
    descriptor.writeUInt32LE(plain.length, 12);
    const path = await ws.archive(
      "a.zip",
      buildZip([
        {
          ...entry,
          data: Buffer.concat([entry.data as Buffer, descriptor]),
          compressedSize: (entry.data as Buffer).length,
        },
      ]),
    );
    const entries = await expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS);
    expect(entries.map((e) => [e.path, e.size])).toEqual([["streamed.txt", plain.length]]);
  });
});
