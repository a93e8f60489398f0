// A throwaway certificate authority and server certificate for tests that
// start local HTTPS servers. Generated per test run with the openssl command
// line (no certificate ever sits in the repository); the CA is only trusted by
// clients that are handed it explicitly.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface TestCertificates {
  /** PEM of the test CA: pass it as a client's `ca`. */
  ca: string;
  /** PEM key and certificate of a server valid for the requested names and addresses, signed by the CA. */
  key: string;
  cert: string;
}

/** Creates a CA and a server certificate for `dnsNames` and `ipAddresses` (valid for one day). */
export async function createTestCertificates(
  dnsNames: readonly string[],
  ipAddresses: readonly string[] = [],
): Promise<TestCertificates> {
  const dir = await mkdtemp(join(tmpdir(), "spool-tls-"));
  try {
    const p = (name: string) => join(dir, name);
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    await run("openssl", [
      "req",
      "-x509",
      ...ec,
      "-keyout",
      p("ca.key"),
      "-out",
      p("ca.crt"),
      "-days",
      "1",
      "-subj",
      "/CN=spool-test-ca",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    await run("openssl", [
      "req",
      ...ec,
      "-keyout",
      p("leaf.key"),
      "-out",
      p("leaf.csr"),
      "-subj",
      "/CN=spool-test",
    ]);
    const altNames = [...dnsNames.map((n) => `DNS:${n}`), ...ipAddresses.map((a) => `IP:${a}`)].join(",");
    await writeFile(
      p("leaf.ext"),
      `subjectAltName=${altNames}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n`,
    );
    await run("openssl", [
      "x509",
      "-req",
      "-in",
      p("leaf.csr"),
      "-CA",
      p("ca.crt"),
      "-CAkey",
      p("ca.key"),
      "-CAcreateserial",
      "-out",
      p("leaf.crt"),
      "-days",
      "1",
      "-extfile",
      p("leaf.ext"),
    ]);
    const [ca, key, cert] = await Promise.all(
      ["ca.crt", "leaf.key", "leaf.crt"].map((f) => readFile(p(f), "utf8")),
    );
    return { ca: ca!, key: key!, cert: cert! };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
