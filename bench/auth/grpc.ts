// The few grpc-js values the auth bench needs on the client side. @grpc/grpc-js
// is not a dependency of @spool/bench, so it is loaded from the auth service's
// dependencies (the same installed copy the @spool/proto clients use: pnpm
// links one version, and grpc-js checks `instanceof Metadata`). Its types are
// taken from the generated clients, so nothing here names the package in an
// import tsc has to resolve from bench/.
import { createRequire } from "node:module";
import type { AdminServiceClient } from "@spool/proto/spool/admin/v1/admin.js";

type ListProjections = AdminServiceClient["listProjections"];
// Parameters<> of an overloaded method is taken from its last overload: (request, metadata, options, callback).
export type Metadata = Parameters<ListProjections>[1];
export type CallOptions = Parameters<ListProjections>[2];
export type ServiceError = NonNullable<Parameters<Parameters<ListProjections>[3]>[0]>;
export type ChannelCredentials = ConstructorParameters<typeof AdminServiceClient>[1];

interface GrpcJs {
  credentials: { createInsecure(): ChannelCredentials };
  Metadata: new () => Metadata;
  status: Readonly<Record<string, number>>;
}

const requireFromAuth = createRequire(new URL("../../services/auth/package.json", import.meta.url));
const grpc = requireFromAuth("@grpc/grpc-js") as GrpcJs;

export const insecure = (): ChannelCredentials => grpc.credentials.createInsecure();

/** gRPC status UNAUTHENTICATED (16). */
export const UNAUTHENTICATED = grpc.status.UNAUTHENTICATED ?? 16;

export function bearerMetadata(token: string): Metadata {
  const m = new grpc.Metadata();
  m.set("authorization", `Bearer ${token}`);
  return m;
}
