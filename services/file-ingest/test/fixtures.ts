// People and calls for file-ingest's tests: organisations with an owner, an
// admin and members, a service account, and promise wrappers for the
// streaming RPCs.
import { randomUUID } from "node:crypto";
import { type ClientWritableStream, Metadata, type ServiceError } from "@grpc/grpc-js";
import { Role } from "@spool/proto/spool/auth/v1/auth.js";
import type {
  DownloadFileResponse,
  FileServiceClient,
  UploadMetadata,
  UploadRequest,
  UploadResponse,
} from "@spool/proto/spool/files/v1/files.js";
import { authCall, bearer, type FilesStack } from "./harness.js";

export const OPERATOR = { email: "admin@spool.test", password: "correct horse battery staple 42" };

export interface Person {
  token: string;
  userId: string;
  orgId: string;
}

export interface Org {
  orgId: string;
  owner: Person;
  admin: Person;
  member: Person;
  member2: Person;
  /** A service account of the organisation (scope gen:follow: no scope grants file access). */
  service: Person;
}

async function login(stack: FilesStack, email: string, password: string): Promise<Person> {
  const c = stack.auth.client;
  const r = await authCall(c.login, c, { email, password });
  return { token: r.tokens!.accessToken, userId: r.user!.userId, orgId: r.user!.orgId };
}

/** An organisation with an owner, an admin, two members and a service account. */
export async function createOrg(stack: FilesStack, slug = `org-${randomUUID().slice(0, 8)}`): Promise<Org> {
  const c = stack.auth.client;
  const op = await login(stack, OPERATOR.email, OPERATOR.password);
  const ownerEmail = `owner@${slug}.test`;
  const password = "a password long enough";
  const created = await authCall(
    c.createOrganization,
    c,
    { name: slug, slug, ownerEmail, ownerDisplayName: "O", ownerPassword: password },
    op.token,
  );
  const orgId = created.organization!.orgId;
  const owner = await login(stack, ownerEmail, password);
  const add = async (name: string, roles: Role[]) => {
    const email = `${name}@${slug}.test`;
    await authCall(c.createUser, c, { email, displayName: name, password, roles }, owner.token);
    return login(stack, email, password);
  };
  const sa = await authCall(
    c.createServiceAccount,
    c,
    { name: "robot", scopes: ["gen:follow"] },
    owner.token,
  );
  const exchanged = await authCall(c.exchangeClientCredentials, c, {
    clientId: sa.serviceAccount!.serviceAccountId,
    clientSecret: sa.clientSecret,
    scopes: [],
  });
  return {
    orgId,
    owner,
    admin: await add("admin", [Role.ROLE_ADMIN]),
    member: await add("member", [Role.ROLE_MEMBER]),
    member2: await add("member2", [Role.ROLE_MEMBER]),
    service: { token: exchanged.accessToken, userId: sa.serviceAccount!.serviceAccountId, orgId },
  };
}

export interface UploadOptions {
  /** Bytes per chunk message (default 64 KiB). */
  chunkBytes?: number;
  /** Send `end` (default true). */
  end?: boolean;
  /** Cancel the call after this many chunks were written (and do not end it). */
  cancelAfterChunks?: number;
  /** Messages sent after the metadata instead of chunks of `content`. */
  messages?: UploadRequest[];
}

/** One Upload call; resolves with the response or rejects with the ServiceError. */
export function upload(
  client: FileServiceClient,
  token: string | undefined,
  metadata: Partial<UploadMetadata>,
  content: Uint8Array,
  o: UploadOptions = {},
): Promise<UploadResponse> {
  return new Promise((resolve, reject) => {
    const stream: ClientWritableStream<UploadRequest> = client.upload(
      token ? bearer(token) : new Metadata(),
      { deadline: Date.now() + 60_000 },
      (err: ServiceError | null, res?: UploadResponse) => (err ? reject(err) : resolve(res!)),
    );
    stream.on("error", () => {}); // the callback reports it
    const meta: UploadMetadata = { displayName: "file.txt", contentType: "", sha256: "", ...metadata };
    stream.write({ part: { $case: "metadata", value: meta } });
    if (o.messages) for (const m of o.messages) stream.write(m);
    else {
      const size = o.chunkBytes ?? 64 * 1024;
      let n = 0;
      for (let at = 0; at < content.length; at += size) {
        stream.write({ part: { $case: "chunk", value: Buffer.from(content.subarray(at, at + size)) } });
        if (o.cancelAfterChunks !== undefined && ++n >= o.cancelAfterChunks) {
          // Let the chunks reach the server before the cancel.
          setTimeout(() => stream.cancel(), 200);
          return;
        }
      }
    }
    if (o.end ?? true) stream.write({ part: { $case: "end", value: {} } });
    stream.end();
  });
}

/** DownloadFile: the header and the bytes. */
export function download(
  client: FileServiceClient,
  token: string,
  fileId: string,
  range: { offset?: number; length?: number } = {},
): Promise<{ header: DownloadFileResponse["item"]; bytes: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = client.downloadFile(
      { fileId, offset: BigInt(range.offset ?? 0), length: BigInt(range.length ?? 0) },
      bearer(token),
    );
    let header: DownloadFileResponse["item"];
    const parts: Buffer[] = [];
    s.on("data", (r: DownloadFileResponse) => {
      if (r.item?.$case === "header") header = r.item;
      else if (r.item?.$case === "chunk") parts.push(Buffer.from(r.item.value));
    });
    s.on("end", () => resolve({ header, bytes: Buffer.concat(parts) }));
    s.on("error", reject);
  });
}

export function codeOfError(e: unknown): number | undefined {
  return (e as ServiceError).code;
}

/** The call's error (fails the test if it succeeded). */
export async function failure(p: Promise<unknown>): Promise<ServiceError> {
  try {
    await p;
  } catch (e) {
    return e as ServiceError;
  }
  throw new Error("expected the call to fail");
}
