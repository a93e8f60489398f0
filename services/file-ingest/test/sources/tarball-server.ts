// An HTTPS server for tarball tests: serves archives the test builds with the
// tar command line, and answers configured paths with redirects.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

export interface TarballServer {
  port: number;
  url(path: string, host?: string): string;
  /** Serves a .tar.gz of `files` at `path`. */
  tarball(path: string, files: Record<string, string>): void;
  /** Serves raw bytes at `path`. */
  raw(path: string, bytes: Buffer): void;
  /** Answers `path` with a 302 to `location`. */
  redirect(path: string, location: string): void;
  requests: string[];
  close(): Promise<void>;
}

export async function startTarballServer(tls: { key: string; cert: string }): Promise<TarballServer> {
  const routes = new Map<string, { status: number; body?: Buffer; location?: string }>();
  const requests: string[] = [];
  const server = createServer({ key: tls.key, cert: tls.cert }, (req, res) => {
    const path = new URL(req.url ?? "/", "https://x").pathname;
    requests.push(path);
    const route = routes.get(path);
    if (!route) {
      res.writeHead(404).end();
      return;
    }
    if (route.location) res.writeHead(route.status, { location: route.location }).end();
    else res.writeHead(200, { "content-type": "application/gzip" }).end(route.body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    requests,
    url: (path, host = "127.0.0.1") => `https://${host}:${port}${path}`,
    tarball(path, files) {
      const dir = mkdtempSync(join(tmpdir(), "spool-tarball-"));
      try {
        for (const [name, content] of Object.entries(files)) {
          mkdirSync(dirname(join(dir, "tree", name)), { recursive: true });
          writeFileSync(join(dir, "tree", name), content);
        }
        execFileSync("tar", ["-czf", join(dir, "out.tar.gz"), "-C", join(dir, "tree"), "."]);
        routes.set(path, { status: 200, body: readFileSync(join(dir, "out.tar.gz")) });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    raw: (path, bytes) => routes.set(path, { status: 200, body: bytes }),
    redirect: (path, location) => routes.set(path, { status: 302, location }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
