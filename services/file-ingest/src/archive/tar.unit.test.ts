// Hostile tars and tar.gz, built with tar-stream's pack or header by header,
// each refused with its typed reason naming the entry; after every refusal
// the target is empty and nothing exists outside it.
import { gzipSync } from "node:zlib";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type ArchiveLimits, type ArchiveRefusalReason, DEFAULT_ARCHIVE_LIMITS } from "./archive.js";
import { expandArchive } from "./expand.js";
import {
  packTar,
  rawTarHeader,
  refusalOf,
  TAR_END,
  type TarEntry,
  tarData,
  type Workspace,
  workspace,
} from "./fixtures.test.js";

let ws: Workspace;
beforeEach(async () => {
  ws = await workspace();
});
afterEach(async () => {
  await ws.remove();
});

async function expectRefused(
  tar: Buffer,
  reason: ArchiveRefusalReason,
  entry: string | RegExp,
  limits: Partial<ArchiveLimits> = {},
) {
  for (const [name, bytes] of [
    ["a.tar", tar],
    ["a.tar.gz", gzipSync(tar)],
  ] as const) {
    const path = await ws.archive(name, bytes);
    const refusal = await refusalOf(
      expandArchive({ path }, ws.target, { ...DEFAULT_ARCHIVE_LIMITS, ...limits }),
    );
    expect({ archive: name, reason: refusal.reason, entry: refusal.entry }).toEqual({
      archive: name,
      reason,
      entry: typeof entry === "string" ? entry : expect.stringMatching(entry),
    });
    expect(await ws.listTarget()).toEqual([]);
    await ws.untouched();
  }
}

const file = (name: string, content: string | Buffer = "x"): TarEntry => ({ name, content });
const ok = file("ok/fine.txt", "fine");

describe("tar paths and names", () => {
  it.each([
    ["/etc/passwd", "ABSOLUTE_PATH"],
    ["C:/x.txt", "DRIVE_PATH"],
    ["//server/share/x", "UNC_PATH"],
    ["\\\\server\\share\\x", "UNC_PATH"],
    ["a\\b.txt", "BACKSLASH"],
    ["../x.txt", "PARENT_SEGMENT"],
    ["./a/../../x.txt", "PARENT_SEGMENT"],
    ["../outEvil/x.txt", "PARENT_SEGMENT"],
    ["bidi\u202Egnp.exe", "FORBIDDEN_CHARACTER", "bidi\\u{202E}gnp.exe"],
    ["tab\tname", "FORBIDDEN_CHARACTER", "tab\\u{9}name"],
    ["PRN.txt", "RESERVED_NAME"],
    ["dir./x", "RESERVED_NAME"],
  ] as const)("%s → %s", async (name, reason, shown?: string) => {
    await expectRefused(await packTar([ok, file(name)]), reason, shown ?? name);
  });

  it("a NUL inside a pax path is refused", async () => {
    const pax = (path: string) => {
      const record = ` path=${path}\n`;
      // A pax record's length counts its own digits.
      let length = record.length + 1;
      while (String(length).length + record.length !== length) length = String(length).length + record.length;
      return Buffer.from(`${length}${record}`);
    };
    const body = pax("a\0b.txt");
    const tar = Buffer.concat([
      rawTarHeader({ name: "PaxHeader", size: body.length, typeflag: "x" }),
      tarData(body),
      rawTarHeader({ name: "placeholder", size: 1 }),
      tarData("x"),
      TAR_END,
    ]);
    await expectRefused(tar, "FORBIDDEN_CHARACTER", "a\\u{0}b.txt");
  });

  it("a name longer than the limits (GNU/pax long names) is refused", async () => {
    await expectRefused(await packTar([file(`${"n".repeat(300)}.txt`)]), "NAME_TOO_LONG", /^n+/u);
  });

  it.each([
    ["Makefile", "makefile"],
    ["caf\u00e9", "cafe\u0301"],
    ["x", "x/y"],
    ["dup.txt", "dup.txt"],
  ])("%s + %s → DUPLICATE_NAME", async (first, second) => {
    await expectRefused(await packTar([file(first), file(second)]), "DUPLICATE_NAME", second);
  });
});

describe("tar entry types", () => {
  it.each([
    [{ name: "ln", type: "symlink", linkname: "/etc/passwd" }, "LINK"],
    [{ name: "ln", type: "symlink", linkname: "../../outside" }, "LINK"],
    [{ name: "hard", type: "link", linkname: "ok/fine.txt" }, "LINK"],
    [{ name: "tty", type: "character-device", devmajor: 5, devminor: 0 }, "DEVICE"],
    [{ name: "sda", type: "block-device", devmajor: 8, devminor: 0 }, "DEVICE"],
    [{ name: "pipe", type: "fifo" }, "DEVICE"],
  ] as const)("%o → %s", async (entry, reason) => {
    await expectRefused(await packTar([ok, entry]), reason, entry.name);
  });

  it("an unknown type flag is refused", async () => {
    const tar = Buffer.concat([rawTarHeader({ name: "weird", size: 0, typeflag: "S" }), TAR_END]);
    await expectRefused(tar, "UNSUPPORTED_FORMAT", "weird");
  });

  it("a directory with data is refused (tar-stream would read the data as headers)", async () => {
    const hidden = Buffer.concat([rawTarHeader({ name: "hidden.txt", size: 1 }), tarData("x")]);
    const tar = Buffer.concat([
      rawTarHeader({ name: "d/", size: hidden.length, typeflag: "5" }),
      hidden,
      TAR_END,
    ]);
    await expectRefused(tar, "SIZE_MISMATCH", "d/");
  });
});

describe("tar sizes", () => {
  it("an archive ending inside an entry (a size that lies) is refused and leaves nothing", async () => {
    const tar = Buffer.concat([
      rawTarHeader({ name: "first.txt", size: 5 }),
      tarData("first"),
      rawTarHeader({ name: "liar.bin", size: 100_000 }),
      Buffer.alloc(3000, 0x61),
    ]);
    await expectRefused(tar, "SIZE_MISMATCH", "liar.bin");
  });

  it("entries or total over the size limits are refused", async () => {
    const limits = { maxEntryBytes: 100, maxTotalBytes: 150 };
    await expectRefused(await packTar([file("big.bin", Buffer.alloc(101))]), "TOO_LARGE", "big.bin", limits);
    await expectRefused(
      await packTar([file("a.bin", Buffer.alloc(80)), file("b.bin", Buffer.alloc(80))]),
      "TOO_LARGE",
      "b.bin",
      limits,
    );
  });

  it("more entries than the limit are refused", async () => {
    const entries = [0, 1, 2, 3].map((i) => file(`f${i}.txt`));
    await expectRefused(await packTar(entries), "TOO_MANY_ENTRIES", "f3.txt", { maxEntries: 3 });
  });

  it("a corrupt header checksum is refused", async () => {
    const header = rawTarHeader({ name: "x.txt", size: 1 });
    header[0] = 0x79;
    await expectRefused(Buffer.concat([header, tarData("x"), TAR_END]), "CORRUPT", "");
  });
});

describe("tar.gz ratio", () => {
  it("a gzip stream inflating beyond 100:1 past the grace size is stopped while streaming", async () => {
    const tar = await packTar([file("zeros.bin", Buffer.alloc(4 * 1024 * 1024))]);
    const path = await ws.archive("bomb.tar.gz", gzipSync(tar));
    const refusal = await refusalOf(expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS));
    expect([refusal.reason, refusal.entry]).toEqual(["RATIO_EXCEEDED", "zeros.bin"]);
    expect(await ws.listTarget()).toEqual([]);
    await ws.untouched();
  });

  it("a stream of zero blocks (no entries at all) is a bomb too", async () => {
    const path = await ws.archive(
      "zeros.tar.gz",
      gzipSync(Buffer.concat([await packTar([file("a.txt")]), Buffer.alloc(8 * 1024 * 1024)])),
    );
    const refusal = await refusalOf(expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS));
    expect(refusal.reason).toBe("RATIO_EXCEEDED");
    expect(await ws.listTarget()).toEqual([]);
  });

  it("a truncated gzip is refused", async () => {
    const gz = gzipSync(await packTar([file("a.txt", "hello".repeat(1000))]));
    const path = await ws.archive("cut.tar.gz", gz.subarray(0, gz.length - 30));
    const refusal = await refusalOf(expandArchive({ path }, ws.target, DEFAULT_ARCHIVE_LIMITS));
    expect(["SIZE_MISMATCH", "CORRUPT"]).toContain(refusal.reason);
    expect(await ws.listTarget()).toEqual([]);
  });
});
