// Per-organisation storage and per-user upload rate, through gRPC: parallel
// uploads can never together pass the organisation's limit, and a refused
// upload changes nothing (no event, no blob, no quota).
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { readErrorDetails } from "@spool/kit";
import { ScanStatus } from "@spool/proto/spool/files/v1/files.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrg, download, failure, type Org, upload } from "./fixtures.js";
import { call, type FilesStack, startFilesStack } from "./harness.js";

const infra = useInfra("flimits");
let stack: FilesStack;
let blobDir: string;
const LIMIT = 10_000;
const text = (n: number) => Buffer.from(randomBytes(n).toString("hex").slice(0, n));

async function blobCount(): Promise<number> {
  let n = 0;
  for await (const _ of stack.files.blobs.list()) n++;
  return n;
}

beforeAll(async () => {
  blobDir = await mkdtemp(join(tmpdir(), "spool-files-limits-"));
  stack = await startFilesStack(infra(), blobDir, {
    SPOOL_ORG_MAX_STORED_BYTES: String(LIMIT),
    SPOOL_UPLOADS_PER_WINDOW: "4",
    SPOOL_UPLOAD_WINDOW_SECONDS: "3600",
    // clamd configured but absent: files stay PENDING and no scan verdict moves the stream.
    SPOOL_SCANNER: "clamd",
    SPOOL_CLAMD_SOCKET: join(blobDir, "no-clamd-here.sock"),
  });
});

afterAll(async () => {
  await stack?.stop();
  await rm(blobDir, { recursive: true, force: true });
});

describe("organisation storage limit", () => {
  let org: Org;
  beforeAll(async () => {
    org = await createOrg(stack, "quota");
  });

  it("lets parallel uploads take no more than the limit, and a refused one changes nothing", async () => {
    const users = [org.owner, org.admin, org.member, org.member2];
    const blobs = await blobCount();
    // 8 uploads of 3000 bytes at once: 3 fit in 10,000 bytes, the 4th would not.
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) =>
        upload(stack.client, users[i % 4]!.token, { displayName: `q${i}.txt` }, text(3000)),
      ),
    );
    const ok = results.filter((r) => r.status === "fulfilled");
    const refused = results.flatMap((r) => (r.status === "rejected" ? [r.reason as { code: number }] : []));
    expect(ok.length).toBe(3);
    expect(refused.map((e) => e.code)).toEqual(Array(5).fill(status.RESOURCE_EXHAUSTED));
    expect(await stack.files.quota.used(org.orgId)).toBe(9000);
    expect(await blobCount()).toBe(blobs + 3);

    // Announced beyond what is left: refused before any byte is read; nothing moves.
    const head = await stack.files.head();
    const e = await failure(
      upload(stack.client, org.member.token, { displayName: "big.txt", sizeBytes: 2000n }, text(2000)),
    );
    expect(e.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(e.details).toMatch(/storage limit/);
    expect(await stack.files.head()).toBe(head);
    expect(await stack.files.quota.used(org.orgId)).toBe(9000);
    expect(await blobCount()).toBe(blobs + 3);

    // A deleted file gives its bytes back.
    const first = ok[0]!.value.file!;
    await call(stack.client.deleteFile, stack.client, { fileId: first.fileId }, org.owner.token);
    expect(await stack.files.quota.used(org.orgId)).toBe(6000);
    await upload(stack.client, org.owner.token, { displayName: "fits again.txt" }, text(3000));
    expect(await stack.files.quota.used(org.orgId)).toBe(9000);
  });

  it("counts from the projection when Redis lost the count", async () => {
    await stack.files.quota.forget(org.orgId);
    await eventually(async () => (await stack.files.readModel.storedBytes(org.orgId)) === 9000);
    const e = await failure(
      upload(stack.client, org.admin.token, { displayName: "no room.txt" }, text(3000)),
    );
    expect(e.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(await stack.files.quota.used(org.orgId)).toBe(9000);
  });
});

describe("uploads per user", () => {
  it("refuses beyond the rate with RESOURCE_EXHAUSTED and a retry delay, recording nothing", async () => {
    const org = await createOrg(stack, "rate");
    for (let i = 0; i < 4; i++)
      await upload(stack.client, org.member.token, { displayName: `r${i}.txt` }, text(10));
    const head = await stack.files.head();
    const e = await failure(upload(stack.client, org.member.token, { displayName: "r5.txt" }, text(10)));
    expect(e.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(readErrorDetails(e.metadata).retryAfterMs).toBeGreaterThan(0);
    expect(await stack.files.head()).toBe(head);
    // Another user of the same organisation has its own allowance.
    await upload(stack.client, org.member2.token, { displayName: "other.txt" }, text(10));
  });
});
