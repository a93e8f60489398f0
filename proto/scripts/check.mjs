// Contract checks run by `make test`:
//   1. buf lint (STANDARD);
//   2. the committed generated code equals what the protos generate now;
//   3. buf breaking (FILE) against the main branch, once main has protos.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const protoDir = new URL("..", import.meta.url).pathname;
const buf = join(protoDir, "node_modules/.bin/buf");
const run = (cmd, args, opts = {}) =>
  execFileSync(cmd, args, { cwd: protoDir, stdio: ["ignore", "pipe", "pipe"], encoding: "utf8", ...opts });

function fail(message) {
  console.error(`proto check failed: ${message}`);
  process.exit(1);
}

function listFiles(dir) {
  const out = [];
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

try {
  run(buf, ["lint"]);
} catch (e) {
  fail(`buf lint:\n${e.stdout}${e.stderr}`);
}

const tmp = mkdtempSync(join(tmpdir(), "spool-proto-"));
try {
  const template = readFileSync(join(protoDir, "buf.gen.yaml"), "utf8").replace("out: gen", `out: ${tmp}`);
  run(buf, ["generate", "--template", template]);
  run(buf, ["build", "--exclude-source-info", "-o", join(tmp, "descriptors.binpb")]);
  const committed = listFiles(join(protoDir, "gen"));
  const fresh = listFiles(tmp);
  if (committed.join("\n") !== fresh.join("\n")) {
    fail(
      `generated file set differs; run 'make generate' and commit.\ncommitted: ${committed}\nfresh: ${fresh}`,
    );
  }
  for (const f of fresh) {
    if (!readFileSync(join(protoDir, "gen", f)).equals(readFileSync(join(tmp, f)))) {
      fail(`gen/${f} differs from what the protos generate; run 'make generate' and commit.`);
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

// Compare with the main branch (origin/main in a clone, else local main).
const repoRoot = run("git", ["rev-parse", "--show-toplevel"]).trim();
const refs = [process.env.SPOOL_BREAKING_AGAINST, "origin/main", "main"].filter(Boolean);
let against;
for (const ref of refs) {
  try {
    run("git", ["cat-file", "-e", `${ref}:proto/buf.yaml`]);
    against = ref;
    break;
  } catch {
    // ref missing, or it has no protos yet
  }
}
if (!against) {
  console.log("proto check: lint and drift ok; breaking skipped (main has no protos yet)");
} else {
  try {
    run(buf, ["breaking", "--against", `${join(repoRoot, ".git")}#ref=${against},subdir=proto`]);
  } catch (e) {
    fail(`buf breaking against ${against}:\n${e.stdout}${e.stderr}`);
  }
  console.log(`proto check: lint, drift and breaking (against ${against}) ok`);
}
