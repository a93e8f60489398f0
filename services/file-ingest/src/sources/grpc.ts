// SourceService at the gRPC edge: who may call (policies), what a request
// must be (rules), and the mapping of requests to the app. Identity and
// organisation come from the token only; another organisation's source is
// NOT_FOUND (app.ts).
import {
  type AsyncService,
  type CallContext,
  InvalidArgumentError,
  principalOf,
  type RequestRules,
  type Rule,
  rule,
  type ServicePolicies,
} from "@spool/kit";
import {
  ChangeKind,
  type PathChange,
  type ManifestEntry as PbManifestEntry,
  type Snapshot,
  type Source,
  SourceKind,
  type SourceServiceService,
} from "@spool/proto/spool/files/v1/sources.js";
import type { ActiveSource, Sources } from "./app.js";
import type { ManifestEntry } from "./domain/manifest.js";
import type { SnapshotState } from "./domain/source.js";
import { gitRefProblem } from "./fetch/git.js";
import { parseSourceUrl } from "./fetch/target.js";
import { SourceFetchError } from "./fetch/types.js";
import { encodeSourcePage, type SourcesReadModel } from "./projection.js";

type Definition = typeof SourceServiceService;

const MANAGE = ["owner", "admin"] as const;

/**
 * Users only. Owners and admins register, delete and snapshot (a snapshot
 * makes the service fetch from the network and store bytes); every role
 * reads and pins (marking a snapshot in use is how a member's work holds it).
 */
export const sourcePolicies: ServicePolicies<Definition> = {
  registerSource: { kind: "user", roles: MANAGE },
  getSource: { kind: "user" },
  listSources: { kind: "user" },
  deleteSource: { kind: "user", roles: MANAGE },
  takeSnapshot: { kind: "user", roles: MANAGE },
  getSnapshot: { kind: "user" },
  listSnapshots: { kind: "user" },
  diffSnapshots: { kind: "user" },
  pinSnapshot: { kind: "user" },
  unpinSnapshot: { kind: "user" },
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const sourceId: Rule<string> = rule.matches(UUID, "a source id (a UUID, lowercase)");
const number: Rule<number> = rule.check((n) => (n >= 1 ? undefined : "a snapshot number (1 or more)"));
const HOLDER = /^[A-Za-z0-9_:.-]{1,128}$/;
const holder: Rule<string> = rule.matches(HOLDER, "1-128 of letters, digits, '_', '-', ':', '.'");
const ref: Rule<string> = rule.check((r) =>
  /^[0-9a-f]{64}$/.test(r) ? undefined : "a snapshot ref (64 lowercase hex)",
);
const optionalRef: Rule<string> = rule.check((r) =>
  r === "" || /^[0-9a-f]{64}$/.test(r) ? undefined : "empty or a snapshot ref (64 lowercase hex)",
);
const pageSize = (max: number, def: number): Rule<number> =>
  rule.check((n) => (n < 0 || n > max ? `0-${max} (0 means ${def})` : undefined));
const pageToken: Rule<string> = rule.check((t) => (t.length > 512 ? "not a page token" : undefined));

export function sourceRules(allowedPorts: ReadonlySet<number>): RequestRules<Definition> {
  return {
    registerSource: (req, _field, v) => {
      if (req.displayName.trim() === "" || req.displayName.length > 200)
        v.check("display_name", "1-200 characters");
      if (req.kind !== SourceKind.SOURCE_KIND_GIT && req.kind !== SourceKind.SOURCE_KIND_TARBALL)
        v.check("kind", "SOURCE_KIND_GIT or SOURCE_KIND_TARBALL");
      if (req.url.length > 2_048) v.check("url", "at most 2048 characters");
      else {
        try {
          parseSourceUrl(req.url, { allowedPorts });
        } catch (e) {
          v.check("url", e instanceof SourceFetchError ? e.message : "not a valid URL");
        }
      }
      if (req.kind === SourceKind.SOURCE_KIND_GIT) v.check("git_ref", gitRefProblem(req.gitRef));
      else if (req.gitRef !== "") v.check("git_ref", "only for SOURCE_KIND_GIT");
    },
    getSource: { sourceId },
    listSources: {
      pageSize: pageSize(200, 50),
      pageToken,
      kind: rule.check((k) => (k in SourceKind && k >= 0 ? undefined : "unknown kind")),
    },
    deleteSource: { sourceId },
    takeSnapshot: { sourceId },
    getSnapshot: { sourceId, number, pageSize: pageSize(1000, 200), pageToken },
    listSnapshots: { sourceId, pageSize: pageSize(200, 50), pageToken },
    diffSnapshots: { sourceId, fromRef: optionalRef, toRef: ref, pageSize: pageSize(1000, 200), pageToken },
    pinSnapshot: { sourceId, number, holder },
    unpinSnapshot: { sourceId, number, holder },
  };
}

function toSource(s: ActiveSource): Source {
  const last = s.snapshots[s.snapshots.length - 1];
  return {
    sourceId: s.source.sourceId,
    orgId: s.source.orgId,
    createdBy: s.source.createdBy,
    displayName: s.source.displayName,
    kind: s.source.kind,
    url: s.source.url,
    gitRef: s.source.gitRef,
    createdAtMs: s.source.registeredAtMs,
    lastSnapshotNumber: last?.number ?? 0,
    lastRef: last?.ref ?? "",
  };
}

function toSnapshot(sourceId: string, s: SnapshotState): Snapshot {
  return {
    sourceId,
    number: s.number,
    ref: s.ref,
    fileCount: s.fileCount,
    totalBytes: s.totalBytes,
    commit: s.commit,
    takenAtMs: s.takenAtMs,
    materialised: s.materialised,
    pinnedBy: [...s.pins],
    skippedLinks: s.skippedLinks,
  };
}

const toEntry = (e: ManifestEntry): PbManifestEntry => ({
  path: e.path,
  sizeBytes: BigInt(e.size),
  sha256: e.sha256,
});

/** Offset page tokens over an immutable list (a manifest, a diff, a source's snapshots). */
function offsetPage<T>(items: readonly T[], token: string, size: number): { page: T[]; next: string } {
  let start = 0;
  if (token) {
    const parsed = /^o([0-9]{1,9})$/.exec(Buffer.from(token, "base64url").toString());
    start = parsed ? Number(parsed[1]) : -1;
    if (start < 0 || start > items.length)
      throw new InvalidArgumentError("invalid page token", [
        { field: "page_token", description: "is not a token from this API" },
      ]);
  }
  const end = start + size;
  return {
    page: items.slice(start, end),
    next: end < items.length ? Buffer.from(`o${end}`).toString("base64url") : "",
  };
}

const KIND: Record<string, ChangeKind> = {
  added: ChangeKind.CHANGE_KIND_ADDED,
  modified: ChangeKind.CHANGE_KIND_MODIFIED,
  removed: ChangeKind.CHANGE_KIND_REMOVED,
};

export function sourceService(sources: Sources, readModel: SourcesReadModel): AsyncService<Definition> {
  const who = (ctx: CallContext) => principalOf(ctx);
  return {
    async registerSource(req, ctx) {
      const state = await sources.register(who(ctx), req);
      return { source: toSource(state) };
    },
    async getSource(req, ctx) {
      return { source: toSource(await sources.get(who(ctx), req.sourceId)) };
    },
    async listSources(req, ctx) {
      const principal = who(ctx);
      const { rows, more } = await readModel.list({
        orgId: principal.orgId,
        kind: req.kind,
        pageToken: req.pageToken,
        limit: req.pageSize || 50,
      });
      // The row says which sources; the log says what they are (and drops one deleted since).
      const found = await Promise.all(
        rows.map((r) => sources.get(principal, r.source_id).catch(() => undefined)),
      );
      const last = rows[rows.length - 1];
      return {
        sources: found.filter((s): s is ActiveSource => s !== undefined).map(toSource),
        nextPageToken: more && last ? encodeSourcePage(last) : "",
      };
    },
    async deleteSource(req, ctx) {
      await sources.delete(who(ctx), req.sourceId);
      return {};
    },
    async takeSnapshot(req, ctx) {
      const { snapshot, pruned } = await sources.takeSnapshot(who(ctx), req.sourceId, ctx.signal);
      return { snapshot: toSnapshot(req.sourceId, snapshot), pruned };
    },
    async getSnapshot(req, ctx) {
      const snapshot = await sources.snapshot(who(ctx), req.sourceId, req.number);
      const { page, next } = offsetPage(
        await sources.manifest(snapshot.ref),
        req.pageToken,
        req.pageSize || 200,
      );
      return {
        snapshot: toSnapshot(req.sourceId, snapshot),
        entries: page.map(toEntry),
        nextPageToken: next,
      };
    },
    async listSnapshots(req, ctx) {
      const state = await sources.get(who(ctx), req.sourceId);
      const newestFirst = [...state.snapshots].reverse();
      const { page, next } = offsetPage(newestFirst, req.pageToken, req.pageSize || 50);
      return { snapshots: page.map((s) => toSnapshot(req.sourceId, s)), nextPageToken: next };
    },
    async diffSnapshots(req, ctx) {
      const { changes, fromKnown } = await sources.diff(who(ctx), req.sourceId, req.fromRef, req.toRef);
      const { page, next } = offsetPage(changes, req.pageToken, req.pageSize || 200);
      const count = (kind: string) => changes.filter((c) => c.kind === kind).length;
      return {
        changes: page.map(
          (c): PathChange => ({
            kind: KIND[c.kind] ?? ChangeKind.CHANGE_KIND_UNSPECIFIED,
            entry: toEntry(c.entry),
            previousSha256: c.kind === "modified" ? c.previous.sha256 : "",
          }),
        ),
        nextPageToken: next,
        fromKnown,
        added: count("added"),
        modified: count("modified"),
        removed: count("removed"),
      };
    },
    async pinSnapshot(req, ctx) {
      return {
        snapshot: toSnapshot(req.sourceId, await sources.pin(who(ctx), req.sourceId, req.number, req.holder)),
      };
    },
    async unpinSnapshot(req, ctx) {
      const before = await sources.snapshot(who(ctx), req.sourceId, req.number);
      const after = await sources.unpin(who(ctx), req.sourceId, req.number, req.holder);
      return {
        snapshot: toSnapshot(req.sourceId, after),
        pruned: before.materialised && !after.materialised,
      };
    },
  };
}
