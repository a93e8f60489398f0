import { type AsyncService, firstAndRest, InvalidArgumentError, principalOf, SpoolError } from "@spool/kit";
import { FileOrigin } from "@spool/proto/spool/files/v1/events.js";
import type { FileServiceService, UploadRequest } from "@spool/proto/spool/files/v1/files.js";
import { reachesWholeOrg } from "../app/access.js";
import type { Files } from "../app/files.js";
import type { FilesReadModel } from "../projections/files.js";
import { sanitiseDisplayName } from "../upload/display-name.js";
import { decodePageToken, encodePageToken, fromRow, fromState, ROW_SCAN_OF } from "./mapping.js";

type Definition = typeof FileServiceService;

export interface FileServiceDeps {
  files: Files;
  readModel: FilesReadModel;
  /** Waits (bounded) until the projection has applied `sequence`. */
  waitForProjection(sequence: number): Promise<void>;
  /** Longest an Upload stream may stay open. */
  uploadMaxMs: number;
  downloadChunkBytes: number;
  importUrl: AsyncService<Definition>["importUrl"];
  expandArchive: AsyncService<Definition>["expandArchive"];
}

const missing = (field: string, description: string) =>
  new InvalidArgumentError(`${field}: ${description}`, [{ field, description }]);

/** The chunks of an Upload stream after its metadata, ending at `end` (a stream without it is refused). */
async function* uploadChunks(rest: AsyncIterable<UploadRequest>): AsyncIterable<Uint8Array> {
  for await (const message of rest) {
    const part = message.part;
    if (part?.$case === "chunk") yield part.value;
    else if (part?.$case === "end") return;
    else if (part?.$case === "metadata") throw missing("metadata", "is sent once, in the first message");
    else throw missing("part", "one of metadata, chunk, end");
  }
  // A client that cancels may half-close first: without `end` the content may be cut short.
  throw missing("end", "the upload ended without its `end` message; nothing was stored");
}

export function fileService(d: FileServiceDeps): AsyncService<Definition> {
  return {
    async upload(requests, ctx) {
      const caller = principalOf(ctx);
      const { first, rest } = await firstAndRest(requests);
      if (first?.part?.$case !== "metadata") throw missing("metadata", "the first message is the metadata");
      const m = first.part.value;
      const req = {
        displayName: m.displayName,
        displayNameField: "metadata.display_name",
        declaredContentType: m.contentType,
        contentTypeField: "metadata.content_type",
        expectedSize: m.sizeBytes === undefined ? undefined : Number(m.sizeBytes),
        sizeField: "metadata.size_bytes",
        expectedSha256: m.sha256 || undefined,
        shaField: "metadata.sha256",
        origin: FileOrigin.FILE_ORIGIN_UPLOAD,
      };
      d.files.precheck(req); // a bad request is refused before it costs a slot
      await d.files.takeUploadSlot(caller);
      const timeout = AbortSignal.timeout(d.uploadMaxMs);
      try {
        const r = await d.files.ingest(
          caller,
          req,
          uploadChunks(rest),
          AbortSignal.any([ctx.signal, timeout]),
        );
        return { file: fromState(r.file), sequence: BigInt(r.sequence) };
      } catch (e) {
        if (timeout.aborted && !ctx.signal.aborted)
          throw new SpoolError("DEADLINE_EXCEEDED", `an upload may take at most ${d.uploadMaxMs} ms`);
        throw e;
      }
    },

    async getFile(req, ctx) {
      return { file: fromState(await d.files.get(principalOf(ctx), req.fileId)) };
    },

    async downloadFile(req, ctx) {
      const range = { offset: Number(req.offset), length: Number(req.length) };
      const { file, start, end, bytes } = await d.files.open(principalOf(ctx), req.fileId, range);
      await ctx.send({
        item: {
          $case: "header",
          value: { file: fromState(file), offset: BigInt(start), length: BigInt(end - start) },
        },
      });
      const size = d.downloadChunkBytes;
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      for await (const piece of bytes) {
        ctx.signal.throwIfAborted();
        pending.push(Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength));
        pendingBytes += piece.byteLength;
        while (pendingBytes >= size) {
          const all = Buffer.concat(pending);
          await ctx.send({ item: { $case: "chunk", value: all.subarray(0, size) } });
          pending = [all.subarray(size)];
          pendingBytes = all.length - size;
        }
      }
      if (pendingBytes > 0) await ctx.send({ item: { $case: "chunk", value: Buffer.concat(pending) } });
    },

    async listFiles(req, ctx) {
      const caller = principalOf(ctx);
      if (req.minSequence > 0n) await d.waitForProjection(Number(req.minSequence));
      // A member lists its own files only; naming anyone else lists nothing (as for an unknown user).
      const wholeOrg = reachesWholeOrg(caller);
      if (!wholeOrg && req.ownerId && req.ownerId !== caller.subject) return { files: [], nextPageToken: "" };
      const ownerId = wholeOrg ? req.ownerId || undefined : caller.subject;
      const scanStatus = req.scanStatus ? ROW_SCAN_OF[req.scanStatus] : undefined;
      if (req.scanStatus && !scanStatus) throw missing("scan_status", "unknown status");
      const namePrefix = req.namePrefix ? sanitiseDisplayName(req.namePrefix, 1_024) : "";
      const after = decodePageToken(req.pageToken);
      const limit = req.pageSize || 50;
      const { rows, more } = await d.readModel.list({
        orgId: caller.orgId,
        ...(ownerId ? { ownerId } : {}),
        ...(scanStatus ? { scanStatus } : {}),
        ...(req.contentType ? { contentType: req.contentType.toLowerCase() } : {}),
        ...(req.origin ? { origin: req.origin } : {}),
        ...(namePrefix ? { namePrefix } : {}),
        ...(req.createdAfterMs > 0n ? { createdAfter: new Date(Number(req.createdAfterMs)) } : {}),
        ...(req.createdBeforeMs > 0n ? { createdBefore: new Date(Number(req.createdBeforeMs)) } : {}),
        limit,
        ...(after ? { after } : {}),
      });
      const last = rows.at(-1);
      return {
        files: rows.map(fromRow),
        nextPageToken: more && last ? encodePageToken(last.created_at, last.file_id) : "",
      };
    },

    async deleteFile(req, ctx) {
      const r = await d.files.delete(principalOf(ctx), req.fileId);
      return { fileId: req.fileId, deletedAtMs: BigInt(r.deletedAtMs), sequence: BigInt(r.sequence) };
    },

    importUrl: (req, ctx) => d.importUrl(req, ctx),
    expandArchive: (req, ctx) => d.expandArchive(req, ctx),
  };
}
