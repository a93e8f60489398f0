#!/usr/bin/env node
// spool: a small command line for a running Spool stack.
//
//   spool login --email E --password-file F     log in; prints the token pair as JSON
//   spool refresh --refresh-token T             rotate a refresh token
//   spool logout --access-token T               revoke the session
//   spool whoami --access-token T               introspect your own token
//
// --auth HOST:PORT (or SPOOL_AUTH_ADDR) picks the auth service (default 127.0.0.1:50061).
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import { AuthServiceClient } from "@spool/proto/spool/auth/v1/auth.js";

const USAGE = `usage: spool <login|refresh|logout|whoami> [options]
  login    --email E (--password-file F | --password P)
  refresh  --refresh-token T
  logout   --access-token T
  whoami   --access-token T
common:    --auth HOST:PORT (default $SPOOL_AUTH_ADDR or 127.0.0.1:50061)`;

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    auth: { type: "string" },
    email: { type: "string" },
    password: { type: "string" },
    "password-file": { type: "string" },
    "refresh-token": { type: "string" },
    "access-token": { type: "string" },
  },
});

function need(name: keyof typeof values): string {
  const v = values[name];
  if (typeof v !== "string" || v === "") fail(`--${name} is required`);
  return v as string;
}

function fail(message: string): never {
  process.stderr.write(`spool: ${message}\n${USAGE}\n`);
  process.exit(2);
}

const address = values.auth ?? process.env.SPOOL_AUTH_ADDR ?? "127.0.0.1:50061";
const client = new AuthServiceClient(address, credentials.createInsecure());
const deadline = () => ({ deadline: Date.now() + 10_000 });
const bearer = (token: string) => {
  const m = new Metadata();
  m.set("authorization", `Bearer ${token}`);
  return m;
};

function done(err: ServiceError | null, res: unknown): void {
  client.close();
  if (err) {
    process.stderr.write(`spool: ${err.details || err.message} (code ${err.code})\n`);
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify(res, (_k, v) => (typeof v === "bigint" ? Number(v) : v), 2)}\n`);
}

switch (positionals[0]) {
  case "login": {
    const password = values["password-file"]
      ? readFileSync(values["password-file"], "utf8").replace(/\r?\n$/, "")
      : need("password");
    client.login({ email: need("email"), password }, new Metadata(), deadline(), done);
    break;
  }
  case "refresh":
    client.refreshToken({ refreshToken: need("refresh-token") }, new Metadata(), deadline(), done);
    break;
  case "logout":
    client.logout({}, bearer(need("access-token")), deadline(), done);
    break;
  case "whoami": {
    const token = need("access-token");
    client.introspectToken({ token }, bearer(token), deadline(), done);
    break;
  }
  default:
    fail(positionals[0] ? `unknown command ${positionals[0]}` : "a command is required");
}
