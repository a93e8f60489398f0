// Test certificates made with openssl: a test CA and a server certificate it
// signs (valid for the names and addresses given), plus a self-signed one no
// client trusts. Files live in a temporary directory.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestCerts {
  dir: string;
  caFile: string;
  ca: string;
  /** Signed by the test CA. */
  key: string;
  cert: string;
  /** Self-signed, for the same names: refused by a client that trusts only the test CA (or the system). */
  selfSignedKey: string;
  selfSignedCert: string;
}

export function makeTestCerts(
  names: string[] = ["localhost", "git.spool.test"],
  ips: string[] = ["127.0.0.1"],
): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), "spool-tls-"));
  const run = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  const san = [...names.map((n) => `DNS:${n}`), ...ips.map((i) => `IP:${i}`)].join(",");
  writeFileSync(join(dir, "ext.cnf"), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\n`);
  const ecKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run([
    "req",
    "-x509",
    ...ecKey,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=Spool Test CA",
  ]);
  run(["req", ...ecKey, "-keyout", "server.key", "-out", "server.csr", "-subj", `/CN=${names[0]}`]);
  run([
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "server.pem",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
  ]);
  run([
    "req",
    "-x509",
    ...ecKey,
    "-keyout",
    "self.key",
    "-out",
    "self.pem",
    "-days",
    "2",
    "-subj",
    `/CN=${names[0]}`,
    "-addext",
    `subjectAltName=${san}`,
  ]);
  const read = (f: string) => readFileSync(join(dir, f), "utf8");
  return {
    dir,
    caFile: join(dir, "ca.pem"),
    ca: read("ca.pem"),
    key: read("server.key"),
    cert: read("server.pem"),
    selfSignedKey: read("self.key"),
    selfSignedCert: read("self.pem"),
  };
}
