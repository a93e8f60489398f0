import { type CallOptions, Metadata, type ServiceError } from "@grpc/grpc-js";

/** Metadata carrying `authorization: Bearer <token>`. */
export function bearer(token: string): Metadata {
  const m = new Metadata();
  m.set("authorization", `Bearer ${token}`);
  return m;
}

// The last overload of a ts-proto client method, the one TypeScript infers from.
type Unary<Req, Res> = (
  req: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  cb: (err: ServiceError | null, res: Res) => void,
) => unknown;

/** A unary call of a generated client as a promise, with an optional bearer token and a deadline. */
export function call<Req, Res>(
  method: Unary<Req, Res>,
  client: object,
  req: Req,
  token?: string,
  deadlineMs = 15_000,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(
      client,
      req,
      token ? bearer(token) : new Metadata(),
      { deadline: Date.now() + deadlineMs },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
  });
}

/** The gRPC status code a call failed with, or undefined when it succeeded. */
export async function codeOf(p: Promise<unknown>): Promise<number | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return (e as ServiceError).code;
  }
}
