// A git smart-HTTP server over HTTPS for tests: a node https server running
// `git http-backend` as CGI over bare repositories in a temporary directory,
// the way a real git host serves them. Repositories are built with plain git
// commands from files the test gives. `redirectTo` answers every request with
// a redirect instead (to test that redirects are refused).
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

export interface GitHttpsServer {
  port: number;
  root: string;
  /** https://<host>:<port>/<name>.git */
  url(name: string, host?: string): string;
  /** Creates or updates repository `name` so branch `branch` holds exactly `files`; returns the commit id. */
  commit(
    name: string,
    files: Record<string, string | Buffer>,
    options?: { branch?: string; symlinks?: Record<string, string> },
  ): string;
  /** Requests seen (method and path), to show what the server was asked. */
  requests: string[];
  /** When set, every request is answered 301 to this location. */
  redirectTo: string | undefined;
  close(): Promise<void>;
}

const GIT_ENV = {
  PATH: process.env.PATH ?? "/usr/bin:/bin",
  HOME: tmpdir(),
  GIT_CONFIG_NOSYSTEM: "1",
  GIT_CONFIG_GLOBAL: "/dev/null",
  GIT_AUTHOR_NAME: "t",
  GIT_AUTHOR_EMAIL: "t@spool.test",
  GIT_COMMITTER_NAME: "t",
  GIT_COMMITTER_EMAIL: "t@spool.test",
  GIT_AUTHOR_DATE: "2026-01-01T00:00:00Z",
  GIT_COMMITTER_DATE: "2026-01-01T00:00:00Z",
};

export async function startGitHttpsServer(tls: { key: string; cert: string }): Promise<GitHttpsServer> {
  const root = mkdtempSync(join(tmpdir(), "spool-git-"));
  const requests: string[] = [];
  const state = { redirectTo: undefined as string | undefined };
  const server: Server = createServer({ key: tls.key, cert: tls.cert }, (req, res) => {
    const url = new URL(req.url ?? "/", "https://x");
    requests.push(`${req.method} ${url.pathname}`);
    if (state.redirectTo) {
      res.writeHead(301, { location: state.redirectTo + url.pathname + url.search });
      res.end();
      return;
    }
    const cgi = spawn("git", ["http-backend"], {
      env: {
        ...GIT_ENV,
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: "1",
        REQUEST_METHOD: req.method ?? "GET",
        PATH_INFO: decodeURIComponent(url.pathname),
        QUERY_STRING: url.search.slice(1),
        CONTENT_TYPE: req.headers["content-type"] ?? "",
        ...(req.headers["content-encoding"]
          ? { HTTP_CONTENT_ENCODING: req.headers["content-encoding"] }
          : {}),
        ...(req.headers["git-protocol"] ? { GIT_PROTOCOL: String(req.headers["git-protocol"]) } : {}),
        REMOTE_ADDR: "127.0.0.1",
      },
      stdio: ["pipe", "pipe", "ignore"],
    });
    req.pipe(cgi.stdin);
    let head = Buffer.alloc(0);
    let headersDone = false;
    cgi.stdout.on("data", (chunk: Buffer) => {
      if (headersDone) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      headersDone = true;
      let statusCode = 200;
      for (const line of head.subarray(0, end).toString("latin1").split("\r\n")) {
        const colon = line.indexOf(":");
        const name = line.slice(0, colon).trim();
        const value = line.slice(colon + 1).trim();
        if (name.toLowerCase() === "status") statusCode = Number.parseInt(value, 10);
        else res.setHeader(name, value);
      }
      res.statusCode = statusCode;
      res.write(head.subarray(end + 4));
    });
    cgi.on("close", () => res.end());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const git = (cwd: string, args: string[]) =>
    execFileSync("git", args, { cwd, env: GIT_ENV, stdio: ["ignore", "pipe", "pipe"] })
      .toString()
      .trim();
  return {
    port,
    root,
    requests,
    get redirectTo() {
      return state.redirectTo;
    },
    set redirectTo(value) {
      state.redirectTo = value;
    },
    url: (name, host = "localhost") => `https://${host}:${port}/${name}.git`,
    commit(name, files, options = {}) {
      const branch = options.branch ?? "main";
      const bare = join(root, `${name}.git`);
      git(root, ["init", "--bare", "--quiet", "-b", "main", bare]);
      git(bare, ["config", "uploadpack.allowAnySHA1InWant", "true"]);
      const work = mkdtempSync(join(tmpdir(), "spool-gitwork-"));
      try {
        for (const [path, content] of Object.entries(files)) {
          mkdirSync(dirname(join(work, path)), { recursive: true });
          writeFileSync(join(work, path), content);
        }
        git(work, ["init", "--quiet", "-b", branch]);
        for (const [path, target] of Object.entries(options.symlinks ?? {})) {
          execFileSync("ln", ["-s", target, join(work, path)]);
        }
        git(work, ["add", "-A"]);
        git(work, ["commit", "--quiet", "--allow-empty", "-m", "snapshot"]);
        git(work, ["push", "--quiet", "--force", bare, `${branch}:refs/heads/${branch}`]);
        return git(work, ["rev-parse", "HEAD"]);
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
        rmSync(root, { recursive: true, force: true });
      }),
  };
}
