#!/usr/bin/env node
import { randomUUID } from "node:crypto";
// spool: a small command line for a running Spool stack.
//
//   spool login --email E --password-file F     log in; prints the token pair as JSON
//   spool refresh --refresh-token T             rotate a refresh token
//   spool logout --access-token T               revoke the session
//   spool whoami --access-token T               who the token says you are (WhoAmI)
//   spool generate --access-token T [--model builtin] --prompt P [--no-follow]
//                                               start a generation and follow it to the end
//                                               (--no-follow: print the started generation as JSON)
//   spool follow --access-token T --id G [--after N] [--snapshot]
//                                               follow (or resume) a generation to its end
//                                               (--snapshot: start with the text so far in one piece)
//
// Following prints the output text on stdout and one line per other event on
// stderr ("[7] completed"); it exits 0 only when the generation completed, 1 when
// it failed or was cancelled, or when the stream ended before the generation did.
// Followed from the start (or from a snapshot), it checks the transcript against
// the terminal event's digest (TranscriptDigest) and prints "transcript verified"
// or "transcript NOT verified: <why>" on stderr; a transcript that fails exits 1.
//
// --auth HOST:PORT (or SPOOL_AUTH_ADDR) picks the auth service (default 127.0.0.1:50061);
// --gen HOST:PORT (or SPOOL_GEN_ADDR) generation-stream (default 127.0.0.1:50062).
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import { AuthServiceClient, WhoAmIResponse } from "@spool/proto/spool/auth/v1/auth.js";
import {
  type FollowGenerationResponse,
  failureReasonToJSON,
  GenerationServiceClient,
} from "@spool/proto/spool/generation/v1/generation.js";
import { TranscriptVerifier } from "@spool/transcript";

const USAGE = `usage: spool <login|refresh|logout|whoami|generate|follow> [options]
  login    --email E (--password-file F | --password P)
  refresh  --refresh-token T
  logout   --access-token T
  whoami   --access-token T
  generate --access-token T --prompt P [--model builtin] [--request-id R] [--no-follow]
  follow   --access-token T --id G [--after N] [--snapshot]
common:    --auth HOST:PORT (default $SPOOL_AUTH_ADDR or 127.0.0.1:50061)
           --gen HOST:PORT  (default $SPOOL_GEN_ADDR or 127.0.0.1:50062)`;

const OPTIONS = {
  auth: { type: "string" },
  gen: { type: "string" },
  model: { type: "string" },
  prompt: { type: "string" },
  "request-id": { type: "string" },
  "no-follow": { type: "boolean" },
  id: { type: "string" },
  after: { type: "string" },
  snapshot: { type: "boolean" },
  email: { type: "string" },
  password: { type: "string" },
  "password-file": { type: "string" },
  "refresh-token": { type: "string" },
  "access-token": { type: "string" },
} as const;

/**
 * `--name value` as `--name=value` for options that take a value, so a value
 * starting with "-" (a generation id may: they are base64url) is read as the
 * value, not refused as an ambiguous option.
 */
function joinValues(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const name = arg.startsWith("--") && !arg.includes("=") ? arg.slice(2) : "";
    const option = (OPTIONS as Record<string, { type: string }>)[name];
    if (option?.type === "string" && i + 1 < argv.length) out.push(`${arg}=${argv[++i]}`);
    else out.push(arg);
  }
  return out;
}

const { positionals, values } = parseArgs({
  args: joinValues(process.argv.slice(2)),
  allowPositionals: true,
  options: OPTIONS,
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
  case "whoami":
    // WhoAmI answers any caller (IntrospectToken is for admins); proto JSON names the enums.
    client.whoAmI({}, bearer(need("access-token")), deadline(), (err, res) =>
      done(err, res && WhoAmIResponse.toJSON(res)),
    );
    break;
  case "generate": {
    const gen = genClient();
    const token = need("access-token");
    gen.startGeneration(
      {
        clientRequestId: values["request-id"] ?? randomUUID(),
        model: values.model ?? "builtin",
        messages: [{ role: "user", content: need("prompt"), toolCalls: [] }],
        parameters: undefined,
        toolIds: [],
        fileIds: [],
        conversationId: "",
        tools: [],
      },
      bearer(token),
      deadline(),
      (err, res) => {
        if (err || values["no-follow"]) {
          gen.close();
          return done(err, res);
        }
        const id = res?.generation?.generationId ?? "";
        process.stderr.write(`generation ${id}\n`);
        follow(gen, token, id, 0, false);
      },
    );
    break;
  }
  case "follow":
    follow(
      genClient(),
      need("access-token"),
      need("id"),
      Number(values.after ?? "0"),
      values.snapshot === true,
    );
    break;
  default:
    fail(positionals[0] ? `unknown command ${positionals[0]}` : "a command is required");
}

function genClient(): GenerationServiceClient {
  return new GenerationServiceClient(
    values.gen ?? process.env.SPOOL_GEN_ADDR ?? "127.0.0.1:50062",
    credentials.createInsecure(),
  );
}

/**
 * Prints deltas as they arrive, and one line per other event with its sequence (to resume with
 * --after). The exit status says how the generation ended, so scripts (and CI) can rely on it.
 */
function follow(
  gen: GenerationServiceClient,
  token: string,
  id: string,
  after: number,
  fromSnapshot: boolean,
): void {
  if (!Number.isSafeInteger(after) || after < 0) fail("--after must be a non-negative integer");
  let ending: { ok: boolean; line: string } | undefined;
  const verifier = new TranscriptVerifier();
  // A transcript resumed after a sequence lacks what came before: verifiable only from the start or a snapshot.
  let verifiable = after === 0;
  const stream = gen.followGeneration(
    { generationId: id, afterSequence: BigInt(after), fromSnapshot },
    bearer(token),
  );
  stream.on("data", (r: FollowGenerationResponse) => {
    if (!r.item) return;
    verifier.add(r.item);
    if (r.item.$case === "snapshot") {
      verifiable = true;
      process.stdout.write(r.item.value.text);
      process.stderr.write(`\n[${r.item.value.sequence}] snapshot\n`);
      return;
    }
    if (r.item.$case !== "event") return;
    const e = r.item.value;
    if (e.event?.$case === "delta") process.stdout.write(e.event.value.text);
    else process.stderr.write(`\n[${e.sequence}] ${e.event?.$case ?? "unknown"}\n`);
    if (e.event?.$case === "completed") ending = { ok: true, line: "" };
    else if (e.event?.$case === "failed")
      ending = {
        ok: false,
        line: `generation ${id} failed: ${failureReasonToJSON(e.event.value.reason)} ${e.event.value.message}`,
      };
    else if (e.event?.$case === "cancelled") ending = { ok: false, line: `generation ${id} was cancelled` };
  });
  stream.on("end", () => {
    client.close();
    gen.close();
    if (!ending)
      ending = { ok: false, line: `the stream of generation ${id} ended before the generation did` };
    else if (verifiable) {
      const v = verifier.result();
      if (v.verified) {
        process.stderr.write(`spool: transcript verified (events 1 to ${v.lastSequence})\n`);
      } else {
        process.stderr.write(`spool: transcript NOT verified: ${v.problem}\n`);
        process.exitCode = 1;
      }
    } else {
      process.stderr.write(
        `spool: transcript not verified (resumed after ${after}; follow from 0 or --snapshot)\n`,
      );
    }
    if (!ending.ok) {
      process.stderr.write(`spool: ${ending.line}\n`);
      process.exitCode = 1;
    }
  });
  stream.on("error", (err: ServiceError) => {
    process.stderr.write(`spool: ${err.details || err.message} (code ${err.code})\n`);
    process.exit(1);
  });
}
