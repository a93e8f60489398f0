// The few grpc-js values the auth bench needs on the client side.
import { type ChannelCredentials, credentials, Metadata, status } from "@grpc/grpc-js";

export type { CallOptions, ServiceError } from "@grpc/grpc-js";
export { Metadata };

export const insecure = (): ChannelCredentials => credentials.createInsecure();

/** gRPC status UNAUTHENTICATED (16). */
export const UNAUTHENTICATED = status.UNAUTHENTICATED;

export function bearerMetadata(token: string): Metadata {
  const m = new Metadata();
  m.set("authorization", `Bearer ${token}`);
  return m;
}
