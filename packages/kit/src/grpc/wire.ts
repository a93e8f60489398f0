import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

/** The raw bytes of every length-delimited occurrence of a field in a protobuf message. */
export function lengthDelimited(bytes: Uint8Array, fieldNo: number): Uint8Array[] {
  const r = new BinaryReader(bytes);
  const out: Uint8Array[] = [];
  while (r.pos < r.len) {
    const [no, type] = r.tag();
    if (no === fieldNo && type === WireType.LengthDelimited) out.push(r.bytes());
    else r.skip(type, no);
  }
  return out;
}

/** The first occurrence of a string field, or "". */
export function stringField(bytes: Uint8Array, fieldNo: number): string {
  const [raw] = lengthDelimited(bytes, fieldNo);
  return raw ? new TextDecoder().decode(raw) : "";
}
