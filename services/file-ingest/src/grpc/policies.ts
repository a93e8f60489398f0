// Who may call each FileService method, and what each request must be (the
// kit's guard checks both before a method body runs). Per-file access (own
// files for members, the organisation's for owners and admins) is decided in
// app/access.ts, by file id, on every call.
import { type RequestRules, type Rule, rule, type ServicePolicies } from "@spool/kit";
import type { FileServiceService, UploadRequest } from "@spool/proto/spool/files/v1/files.js";

type Definition = typeof FileServiceService;

/**
 * Users only: a file belongs to a user of an organisation. Service tokens are
 * PERMISSION_DENIED on every method (no scope grants file access yet).
 */
export const filePolicies: ServicePolicies<Definition> = {
  upload: { kind: "user" },
  getFile: { kind: "user" },
  downloadFile: { kind: "user" },
  listFiles: { kind: "user" },
  deleteFile: { kind: "user" },
  importUrl: { kind: "user" },
  expandArchive: { kind: "user" },
};

/** File ids are UUIDs (server-generated); anything else is refused before it reaches a subject or a query. */
export const FILE_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const fileId: Rule<string> = rule.matches(FILE_ID, "a file id (a UUID, lowercase)");
const SHA256 = /^[0-9a-f]{64}$/;
/** RFC 6838 type/subtype, parameters not allowed. */
const MEDIA_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;
const contentType: Rule<string> = rule.check((t) =>
  t && !MEDIA_TYPE.test(t) ? "a media type such as image/png (no parameters)" : undefined,
);
/** Room for sanitising: the name is cut to its limit after cleaning, but a huge one is refused outright. */
const RAW_NAME_MAX = 4_096;
const displayName = (required: boolean): Rule<string> =>
  rule.check((n) => {
    if (required && n.trim().length === 0) return "is required";
    return n.length > RAW_NAME_MAX ? `at most ${RAW_NAME_MAX} characters` : undefined;
  });

export interface RuleLimits {
  maxFileBytes: number;
  maxChunkBytes: number;
}

export function fileRules(l: RuleLimits): RequestRules<Definition> {
  const upload: Rule<UploadRequest> = (message, field, v) => {
    const part = message.part;
    if (!part) v.check("part", "one of metadata, chunk, end");
    else if (part.$case === "chunk") {
      if (part.value.length > l.maxChunkBytes)
        v.check("chunk", `at most ${l.maxChunkBytes} bytes per message`);
    } else if (part.$case === "metadata") {
      const m = part.value;
      const at = (name: string) => `metadata.${name}`;
      displayName(true)(m.displayName, at("display_name"), v);
      contentType(m.contentType, at("content_type"), v);
      if (m.sizeBytes !== undefined && (m.sizeBytes < 0n || m.sizeBytes > BigInt(l.maxFileBytes)))
        v.check(at("size_bytes"), `0 to ${l.maxFileBytes} (the per-file limit)`);
      if (m.sha256 && !SHA256.test(m.sha256)) v.check(at("sha256"), "64 lowercase hex digits");
    }
    void field;
  };
  return {
    upload,
    getFile: { fileId },
    downloadFile: {
      fileId,
      offset: rule.check((n) => (n < 0n || n > BigInt(Number.MAX_SAFE_INTEGER) ? "0 or more" : undefined)),
      length: rule.check((n) => (n < 0n || n > BigInt(Number.MAX_SAFE_INTEGER) ? "0 or more" : undefined)),
    },
    listFiles: {
      contentType,
      namePrefix: displayName(false),
      createdAfterMs: rule.timestampMs,
      createdBeforeMs: rule.timestampMs,
      ownerId: rule.check((id) => (id.length > 128 ? "at most 128 characters" : undefined)),
      pageSize: rule.check((n) => (n < 0 || n > 500 ? "0-500 (0 means 50)" : undefined)),
      pageToken: rule.check((t) => (t.length > 512 ? "not a page token" : undefined)),
      minSequence: rule.sequence,
    },
    deleteFile: { fileId },
    importUrl: {
      url: rule.required(2_048),
      displayName: displayName(false),
      contentType,
    },
    expandArchive: { fileId },
  };
}
