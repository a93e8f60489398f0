// A minimal server-reflection client, speaking the wire format of
// grpc.reflection.v1(alpha) ServerReflectionInfo the way grpcurl does.
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { type Client, Metadata } from "@grpc/grpc-js";
import { lengthDelimited, stringField } from "../src/grpc/wire.js";

export type ReflectionVersion = "v1" | "v1alpha";

export type ReflectionQuery = { listServices: true } | { fileContainingSymbol: string };

export interface ReflectionAnswer {
  services: string[];
  /** Encoded FileDescriptorProtos. */
  files: Uint8Array[];
  error: { code: number; message: string } | undefined;
}

function encodeRequest(query: ReflectionQuery): Buffer {
  const w = new BinaryWriter();
  if ("listServices" in query) w.tag(7, WireType.LengthDelimited).string("*");
  else w.tag(4, WireType.LengthDelimited).string(query.fileContainingSymbol);
  return Buffer.from(w.finish());
}

function decodeResponse(bytes: Buffer): ReflectionAnswer {
  const [list] = lengthDelimited(bytes, 6);
  const [files] = lengthDelimited(bytes, 4);
  const [error] = lengthDelimited(bytes, 7);
  return {
    services: list ? lengthDelimited(list, 1).map((s) => stringField(s, 1)) : [],
    files: files ? lengthDelimited(files, 1) : [],
    error: error ? { code: errorCode(error), message: stringField(error, 2) } : undefined,
  };
}

function errorCode(bytes: Uint8Array): number {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [no, type] = r.tag();
    if (no === 1 && type === WireType.Varint) return r.int32();
    r.skip(type, no);
  }
  return 0;
}

/** Sends one reflection request on a fresh stream and returns the first answer. */
export function reflect(
  client: Client,
  version: ReflectionVersion,
  query: ReflectionQuery,
): Promise<ReflectionAnswer> {
  return new Promise((resolve, reject) => {
    const call = client.makeBidiStreamRequest(
      `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`,
      (b: Buffer) => b,
      (b: Buffer) => b,
      new Metadata(),
      { deadline: Date.now() + 5_000 },
    );
    call.once("data", (bytes: Buffer) => {
      resolve(decodeResponse(bytes));
      call.end();
    });
    call.on("error", reject);
    call.write(encodeRequest(query));
  });
}

/** The `name` of an encoded FileDescriptorProto. */
export function fileName(file: Uint8Array): string {
  return stringField(file, 1);
}
