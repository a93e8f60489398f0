// The scan reactor wired into the service: with the development scanner
// ("none") a recorded file becomes CLEAN and downloadable. clamd itself, EICAR
// and clamd outages are file-store's tests (src/scanning/*.int.test.ts).
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ScanStatus } from "@spool/proto/spool/files/v1/files.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrg, download, upload } from "./fixtures.js";
import { call, type FilesStack, startFilesStack } from "./harness.js";

const infra = useInfra("fscan");
let stack: FilesStack;
let blobDir: string;
const text = (n: number) => Buffer.from(randomBytes(n).toString("hex").slice(0, n));

beforeAll(async () => {
  blobDir = await mkdtemp(join(tmpdir(), "spool-files-scan-"));
  stack = await startFilesStack(infra(), blobDir, { SPOOL_SCANNER: "none" });
});

afterAll(async () => {
  await stack?.stop();
  await rm(blobDir, { recursive: true, force: true });
});

describe("scanning (scanner none, development)", () => {
  it("makes a recorded file CLEAN through the scan reactor, then downloadable", async () => {
    const org = await createOrg(stack, "scan");
    const content = text(5000);
    const f = (await upload(stack.client, org.member.token, { displayName: "s.txt" }, content)).file!;
    await eventually(async () => {
      const got = await call(stack.client.getFile, stack.client, { fileId: f.fileId }, org.member.token);
      return got.file!.scanStatus === ScanStatus.SCAN_STATUS_CLEAN;
    });
    expect((await download(stack.client, org.member.token, f.fileId)).bytes.equals(content)).toBe(true);
  });
});
