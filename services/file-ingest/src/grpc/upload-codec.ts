// The Upload stream's chunk messages without the generated decoder's copy.
// ts-proto's UploadRequest.decode copies every `bytes` field
// (Buffer.from(reader.bytes())): one more 1 MiB allocation per chunk on top of
// the one grpc-js already made when it joined the message's HTTP/2 frames.
// Those large short-lived buffers are what made V8 run full (mark-compact)
// collections during an upload (docs/BENCHMARKS.md, file-ingest). A message
// that is exactly one `chunk` field is answered with a view into grpc-js's
// message buffer instead (which nothing else holds or reuses); anything else
// goes through the generated decoder, so the result is always what
// UploadRequest.decode returns.
import { FileServiceService, UploadRequest } from "@spool/proto/spool/files/v1/files.js";

/** Field 2 (`chunk`), wire type 2 (length-delimited). */
const CHUNK_TAG = (2 << 3) | 2;

/** UploadRequest.decode, sharing the chunk's bytes with `message` instead of copying them. */
export function decodeUploadRequest(message: Buffer): UploadRequest {
  if (message.length > 1 && message[0] === CHUNK_TAG) {
    // The length, a varint of at most 5 bytes (a uint32).
    let length = 0;
    let pos = 1;
    for (let shift = 0; shift < 35 && pos < message.length; shift += 7) {
      const byte = message[pos++] as number;
      length += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) {
        if (pos + length === message.length)
          return { part: { $case: "chunk", value: message.subarray(pos, message.length) } };
        break;
      }
    }
  }
  return UploadRequest.decode(message);
}

/** FileService with the Upload decoder above; every other method as generated. */
export const fileServiceDefinition: typeof FileServiceService = {
  ...FileServiceService,
  upload: { ...FileServiceService.upload, requestDeserialize: decodeUploadRequest },
};
