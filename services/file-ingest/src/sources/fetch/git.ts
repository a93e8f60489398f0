// Fetching a git repository over https at a ref, without a shell and without
// running anything the repository ships:
// - git is spawned with argument arrays (never a shell), in a fresh bare
//   repository, with a minimal environment: no system or global config, no
//   terminal prompt, no askpass, no credential helper, HOME in the scratch dir;
// - hooks off (core.hooksPath=/dev/null), only the https transport
//   (protocol.allow=never, protocol.https.allow=always), redirects refused
//   (http.followRedirects=false), TLS verified (http.sslVerify=true; a test CA
//   only through the narrow caFile option), objects fsck'ed, no submodules;
// - nothing is checked out: the tree is listed (ls-tree) and each blob read
//   through cat-file into the blob store, so no path of the repository ever
//   touches the filesystem and no filter, attribute or checkout hook runs;
// - the host's addresses are judged by the SSRF policy first and pinned for
//   git with http.curloptResolve, so git connects to exactly the addresses
//   judged (no second DNS lookup, no rebinding window; redirects are off);
// - a ref is a branch or tag name or a 40-hex commit id, never an option or a
//   refspec, and passed after --end-of-options.
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { type ManifestEntry, manifestPathProblem } from "../domain/manifest.js";
import { resolveTarget, type TargetPolicy } from "./target.js";
import { type FetchContext, type FetchedTree, SourceFetchError } from "./types.js";

/** A branch or tag name (check-ref-format's rules, stricter charset) or a full commit id. */
const REF = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$/;

export function gitRefProblem(ref: string): string | undefined {
  if (!REF.test(ref)) return "1-200 of letters, digits, '.', '_', '/', '-', starting with a letter or digit";
  if (
    ref.includes("..") ||
    ref.includes("//") ||
    ref.endsWith("/") ||
    ref.endsWith(".") ||
    ref.endsWith(".lock")
  )
    return "not a valid git ref name";
  if (ref.split("/").some((part) => part.startsWith("."))) return "not a valid git ref name";
  return undefined;
}

export interface GitSource {
  url: string;
  ref: string;
}

export interface GitFetchOptions extends FetchContext {
  target: TargetPolicy;
  /** Tests only: a CA certificate file git trusts instead of the system's. */
  caFile?: string;
  /** The git program (default "git" on PATH). */
  gitBinary?: string;
}

export async function fetchGit(source: GitSource, options: GitFetchOptions): Promise<FetchedTree> {
  const refProblem = gitRefProblem(source.ref);
  if (refProblem) throw new SourceFetchError("INVALID_REF", refProblem);
  const target = await resolveTarget(source.url, options.target);
  await mkdir(options.workDir, { recursive: true });
  const dir = await mkdtemp(join(options.workDir, "git-"));
  const deadline = Date.now() + options.limits.timeoutMs;
  try {
    const repo = join(dir, "repo.git");
    const git = gitRunner(dir, options, deadline);
    await git(["init", "--bare", "--quiet", repo]);
    const pinned = target.addresses.map((a) => (a.includes(":") ? `[${a}]` : a)).join(",");
    const config = [
      "core.hooksPath=/dev/null",
      "core.fsmonitor=false",
      "core.askPass=",
      "credential.helper=",
      "protocol.allow=never",
      "protocol.https.allow=always",
      "http.followRedirects=false",
      "http.sslVerify=true",
      `http.curloptResolve=${target.host}:${target.port}:${pinned}`,
      "transfer.fsckObjects=true",
      "fetch.recurseSubmodules=false",
      "submodule.recurse=false",
      ...(options.caFile ? [`http.sslCAInfo=${options.caFile}`] : []),
    ].flatMap((c) => ["-c", c]);
    const fetch = await git(
      [
        ...config,
        "-C",
        repo,
        "fetch",
        "--quiet",
        "--no-tags",
        "--depth=1",
        "--end-of-options",
        target.url.href,
        source.ref,
      ],
      { watchBytes: { dir: repo, max: options.limits.maxFetchBytes }, allowFailure: true },
    );
    if (fetch.code !== 0) throw fetchFailure(fetch.stderr);
    // The watcher samples while git runs; a fetch faster than its period is measured once more here.
    if ((await directoryBytes(repo)) > options.limits.maxFetchBytes)
      throw new SourceFetchError("FETCH_TOO_LARGE", `the fetch passed ${options.limits.maxFetchBytes} bytes`);
    const commit = (
      await git(["-C", repo, "rev-parse", "--verify", "--end-of-options", "FETCH_HEAD^{commit}"])
    ).stdout
      .toString()
      .trim();
    if (!/^[0-9a-f]{40}$/.test(commit)) throw new SourceFetchError("FETCH_FAILED", "the ref is not a commit");
    const tree = await git(["-C", repo, "ls-tree", "-r", "-z", "-l", "--full-tree", commit]);
    const { files, skippedLinks } = parseTree(tree.stdout, options.limits);
    const entries = await readBlobs(git, repo, files, options);
    return { entries, commit, skippedLinks };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A stable reason from git's error output (the output itself never leaves this process). */
function fetchFailure(stderr: string): SourceFetchError {
  const has = (re: RegExp) => re.test(stderr);
  if (
    has(
      /SSL certificate|certificate verif|server certificate|SSL_ERROR|self.signed|unable to get local issuer/i,
    )
  )
    return new SourceFetchError("TLS_ERROR", "the server's TLS certificate is not valid");
  if (has(/returned error: 30[0-9]|redirect/i))
    return new SourceFetchError(
      "REDIRECT_REFUSED",
      "the server answered with a redirect; redirects are refused",
    );
  if (has(/couldn't find remote ref|not our ref|unadvertised object|no such remote ref|not a valid object/i))
    return new SourceFetchError("REF_NOT_FOUND", "the ref does not exist in the repository");
  if (has(/terminal prompts disabled|could not read Username|Authentication failed|returned error: 40[13]/i))
    return new SourceFetchError("AUTH_REQUIRED", "the repository needs credentials");
  if (has(/returned error: 404|not found|does not appear to be a git repository/i))
    return new SourceFetchError("REF_NOT_FOUND", "no repository at that URL");
  if (
    has(/Could not resolve|Failed to connect|Couldn't connect|Connection refused|Connection reset|timed out/i)
  )
    return new SourceFetchError("CONNECT_FAILED", "could not connect to the repository's host");
  return new SourceFetchError("FETCH_FAILED", "git could not fetch the repository");
}

interface TreeFile {
  oid: string;
  size: number;
  path: string;
}

/** Parses `ls-tree -r -z -l` output: "<mode> <type> <oid> <size>\t<path>\0", checking every limit before any byte is read. */
function parseTree(out: Buffer, limits: FetchContext["limits"]): { files: TreeFile[]; skippedLinks: number } {
  const files: TreeFile[] = [];
  let skippedLinks = 0;
  let total = 0;
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  let start = 0;
  while (start < out.length) {
    let end = out.indexOf(0, start);
    if (end < 0) end = out.length;
    const record = out.subarray(start, end);
    start = end + 1;
    const tab = record.indexOf(9);
    const meta = /^([0-7]{6}) (blob|tree|commit) ([0-9a-f]{40,64}) +(-|[0-9]+)$/.exec(
      record.subarray(0, tab).toString("latin1"),
    );
    if (tab < 0 || !meta) throw new SourceFetchError("FETCH_FAILED", "unexpected tree listing");
    const [, mode, type, oid, sizeText] = meta;
    if (type !== "blob" || mode === "120000") {
      skippedLinks++; // a symbolic link or a submodule: never followed, never materialised
      continue;
    }
    let path: string;
    try {
      path = utf8.decode(record.subarray(tab + 1)).normalize("NFC");
    } catch {
      throw new SourceFetchError("INVALID_PATH", "a path is not valid UTF-8");
    }
    const problem = manifestPathProblem(path, limits.maxPathBytes);
    if (problem)
      throw new SourceFetchError("INVALID_PATH", `${JSON.stringify(path.slice(0, 200))}: ${problem}`);
    const size = Number(sizeText);
    if (size > limits.maxFileBytes)
      throw new SourceFetchError(
        "FILE_TOO_LARGE",
        `${JSON.stringify(path)} is larger than ${limits.maxFileBytes} bytes`,
      );
    total += size;
    if (total > limits.maxTotalBytes)
      throw new SourceFetchError("TOO_LARGE", `more than ${limits.maxTotalBytes} bytes in all`);
    files.push({ oid: oid ?? "", size, path });
    if (files.length > limits.maxFiles)
      throw new SourceFetchError("TOO_MANY_FILES", `more than ${limits.maxFiles} files`);
  }
  // Two paths equal after NFC would make one manifest line ambiguous.
  const seen = new Set<string>();
  for (const f of files) {
    if (seen.has(f.path))
      throw new SourceFetchError("DUPLICATE_PATH", `${JSON.stringify(f.path)} twice after NFC`);
    seen.add(f.path);
  }
  return { files, skippedLinks };
}

/** Reads each blob through one `git cat-file --batch` and stores it; returns the manifest entries. */
async function readBlobs(
  git: GitRunner,
  repo: string,
  files: TreeFile[],
  options: GitFetchOptions,
): Promise<ManifestEntry[]> {
  const batch = git.spawn(["-C", repo, "cat-file", "--batch"]);
  const entries: ManifestEntry[] = [];
  try {
    for (const file of files) {
      batch.write(`${file.oid}\n`);
      const header = (await batch.readLine()).toString("latin1");
      const match = /^([0-9a-f]+) blob ([0-9]+)$/.exec(header);
      if (!match || match[1] !== file.oid || Number(match[2]) !== file.size)
        throw new SourceFetchError("FETCH_FAILED", "the object store disagrees with the tree listing");
      const staged = await options.blobs.stage(batch.stream(file.size), {
        maxBytes: options.limits.maxFileBytes,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      try {
        await batch.skip(1); // the newline after the content
        await staged.commit();
      } catch (e) {
        await staged.discard();
        throw e;
      }
      entries.push({ path: file.path, size: staged.size, sha256: staged.sha256 });
    }
  } finally {
    batch.close();
  }
  return entries;
}

// --- running git ---------------------------------------------------------------------------

interface RunOptions {
  /** Kill git once the directory holds more than `max` bytes. */
  watchBytes?: { dir: string; max: number };
  /** Resolve with the exit code instead of throwing on a non-zero one. */
  allowFailure?: boolean;
}

interface GitRunner {
  (args: string[], options?: RunOptions): Promise<{ code: number; stdout: Buffer; stderr: string }>;
  spawn(args: string[]): BatchProcess;
}

const MAX_CAPTURE = 64 * 1024 * 1024;

function gitRunner(home: string, options: GitFetchOptions, deadline: number): GitRunner {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: home,
    LANG: "C",
    LC_ALL: "C",
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
    GIT_TERMINAL_PROMPT: "0",
    GIT_ASKPASS: "",
    SSH_ASKPASS: "",
    GIT_PROTOCOL_FROM_USER: "0",
    GIT_ALLOW_PROTOCOL: "https",
  };
  const binary = options.gitBinary ?? "git";
  const run = (args: string[], runOptions: RunOptions = {}) =>
    new Promise<{ code: number; stdout: Buffer; stderr: string }>((resolve, reject) => {
      const child = spawn(binary, args, { cwd: home, env, stdio: ["ignore", "pipe", "pipe"], shell: false });
      const out: Buffer[] = [];
      let outBytes = 0;
      let stderr = "";
      let failure: SourceFetchError | undefined;
      const stop = (error: SourceFetchError) => {
        failure ??= error;
        child.kill("SIGKILL");
      };
      const timer = setTimeout(
        () =>
          stop(new SourceFetchError("TIMEOUT", `the fetch took longer than ${options.limits.timeoutMs} ms`)),
        Math.max(0, deadline - Date.now()),
      );
      const onAbort = () => stop(new SourceFetchError("TIMEOUT", "the fetch was cancelled"));
      options.signal?.addEventListener("abort", onAbort, { once: true });
      const watch = runOptions.watchBytes;
      const watcher = watch
        ? setInterval(() => {
            void directoryBytes(watch.dir).then((n) => {
              if (n > watch.max)
                stop(new SourceFetchError("FETCH_TOO_LARGE", `the fetch passed ${watch.max} bytes`));
            });
          }, 200)
        : undefined;
      child.stdout.on("data", (chunk: Buffer) => {
        outBytes += chunk.length;
        if (outBytes > MAX_CAPTURE) stop(new SourceFetchError("TOO_LARGE", "git's output is too large"));
        else out.push(chunk);
      });
      child.stderr.on("data", (chunk: Buffer) => {
        if (stderr.length < 64 * 1024) stderr += chunk.toString("utf8");
      });
      child.on("error", () => stop(new SourceFetchError("FETCH_FAILED", "git could not be started")));
      child.on("close", (code) => {
        clearTimeout(timer);
        if (watcher) clearInterval(watcher);
        options.signal?.removeEventListener("abort", onAbort);
        if (failure) return reject(failure);
        if (code !== 0 && !runOptions.allowFailure)
          return reject(
            new SourceFetchError(
              "FETCH_FAILED",
              `git ${args.find((a) => !a.startsWith("-") && !a.includes("="))} failed`,
            ),
          );
        resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr });
      });
    });
  return Object.assign(run, {
    spawn: (args: string[]) => new BatchProcess(binary, args, home, env, deadline),
  });
}

/**
 * A long-running git (cat-file --batch) read by exact byte counts. Output is
 * kept as a list of chunks (never re-concatenated), and a blob's bytes are
 * streamed to the caller as they arrive, so a large file costs neither
 * quadratic copying nor its whole size in memory.
 */
class BatchProcess {
  readonly #child;
  readonly #chunks: Buffer[] = [];
  #length = 0;
  #ended = false;
  #waiter: (() => void) | undefined;
  readonly #timer;

  constructor(binary: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, deadline: number) {
    this.#child = spawn(binary, args, { cwd, env, stdio: ["pipe", "pipe", "ignore"], shell: false });
    this.#child.stdout.on("data", (chunk: Buffer) => {
      this.#chunks.push(chunk);
      this.#length += chunk.length;
      this.#wake();
    });
    const end = () => {
      this.#ended = true;
      this.#wake();
    };
    this.#child.on("close", end);
    this.#child.on("error", end);
    this.#timer = setTimeout(() => this.#child.kill("SIGKILL"), Math.max(0, deadline - Date.now()));
  }

  #wake() {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  async #available(): Promise<void> {
    while (this.#length === 0) {
      if (this.#ended) throw new SourceFetchError("TIMEOUT", "reading the repository's objects stopped");
      await new Promise<void>((r) => {
        this.#waiter = r;
      });
    }
  }

  /** Takes up to `max` bytes from the front (at least one; waits for output). */
  async #take(max: number): Promise<Buffer> {
    await this.#available();
    const first = this.#chunks[0] as Buffer;
    const piece = first.length <= max ? first : first.subarray(0, max);
    if (piece === first) this.#chunks.shift();
    else this.#chunks[0] = first.subarray(max);
    this.#length -= piece.length;
    return piece;
  }

  write(line: string) {
    this.#child.stdin.write(line);
  }

  /** One header line (without its newline); lines longer than 4 KiB are a protocol error. */
  async readLine(): Promise<Buffer> {
    const parts: Buffer[] = [];
    let size = 0;
    for (;;) {
      await this.#available();
      const first = this.#chunks[0] as Buffer;
      const newline = first.indexOf(10);
      const piece = await this.#take(newline >= 0 ? newline + 1 : first.length);
      parts.push(piece);
      size += piece.length;
      if (newline >= 0) return Buffer.concat(parts, size).subarray(0, size - 1);
      if (size > 4096) throw new SourceFetchError("FETCH_FAILED", "unexpected object header");
    }
  }

  /** Exactly `n` bytes, as they arrive. */
  async *stream(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      const piece = await this.#take(left);
      left -= piece.length;
      yield piece;
    }
  }

  /** Skips exactly `n` bytes. */
  async skip(n: number): Promise<void> {
    for await (const _ of this.stream(n)) {
      // discarded
    }
  }

  close() {
    clearTimeout(this.#timer);
    this.#child.stdin.end();
    this.#child.kill("SIGKILL");
  }
}

async function directoryBytes(dir: string): Promise<number> {
  let total = 0;
  const entries = await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  for (const e of entries) {
    if (e.isFile()) total += (await stat(join(e.parentPath, e.name)).catch(() => ({ size: 0 }))).size;
  }
  return total;
}
