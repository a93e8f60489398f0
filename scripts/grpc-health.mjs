// node scripts/grpc-health.mjs HOST:PORT
//
// One grpc.health.v1.Health/Check of the server's overall status (service ""):
// prints SERVING, NOT_SERVING, UNKNOWN or the call's error, and exits 0 only for
// SERVING. Plain JavaScript with hand-encoded messages (a one-field enum), so it
// runs on a fresh clone without a build or a TypeScript loader; used by make up.
import { createRequire } from "node:module";

// @grpc/grpc-js is a dependency of the kit, not of the workspace root.
const require = createRequire(new URL("../packages/kit/package.json", import.meta.url));
const grpc = require("@grpc/grpc-js");

const address = process.argv[2];
if (!address) {
  process.stderr.write("usage: node scripts/grpc-health.mjs HOST:PORT\n");
  process.exit(2);
}

const STATUS = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];
const client = new grpc.Client(address, grpc.credentials.createInsecure());
client.makeUnaryRequest(
  "/grpc.health.v1.Health/Check",
  // HealthCheckRequest{service: ""}: every field at its default encodes to nothing.
  () => Buffer.alloc(0),
  // HealthCheckResponse{status = 1}: tag 0x08 then the enum as a one-byte varint; absent means UNKNOWN.
  (bytes) => (bytes.length >= 2 && bytes[0] === 0x08 ? bytes[1] : 0),
  new grpc.Metadata(),
  { deadline: Date.now() + 2_000 },
  (err, status) => {
    client.close();
    if (err) {
      process.stdout.write(`${err.details || err.message}\n`);
      process.exit(1);
    }
    process.stdout.write(`${STATUS[status] ?? `status ${status}`}\n`);
    process.exit(status === 1 ? 0 : 1);
  },
);
