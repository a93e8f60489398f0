// Sources and snapshots (SourceService): registered on the platform from the
// service's wiring with one call.
import { readFile } from "node:fs/promises";
import { FailedPreconditionError, isAllowedAddress, type Platform } from "@spool/kit";
import { SourceKind, SourceServiceService } from "@spool/proto/spool/files/v1/sources.js";
import type { BlobStore } from "../blobs/blob-store.js";
import { type SourceFetcher, Sources } from "./app.js";
import { type SourceSettings, sourceSettings } from "./config.js";
import { fetchGit } from "./fetch/git.js";
import { fetchTarball } from "./fetch/tarball.js";
import type { TargetPolicy } from "./fetch/target.js";
import { sourcePolicies, sourceRules, sourceService } from "./grpc.js";
import { SourcesReadModel, sourcesProjection } from "./projection.js";

export { sourcesConfigProblems, sourcesConfigShape } from "./config.js";
export { SourceSubjects } from "./domain/source.js";

type SourcesConfig = Parameters<typeof sourceSettings>[0];

export interface SourceServiceDeps {
  blobs: BlobStore;
  /** Scratch space for fetches. */
  workDir: string;
  /** Tests: another resolver for source hosts. */
  lookup?: TargetPolicy["lookup"];
}

/** The fetcher for each kind of source, under the SSRF policy and the limits in `settings`. */
export function sourceFetcher(settings: SourceSettings, deps: SourceServiceDeps): SourceFetcher {
  const target: TargetPolicy = {
    allowedPorts: settings.allowedPorts,
    addressAllowed: isAllowedAddress,
    unsafeAllowedTargets: settings.unsafeAllowedTargets,
    ...(deps.lookup ? { lookup: deps.lookup } : {}),
  };
  let caPem: string | undefined;
  return async (source, signal) => {
    if (source.kind === SourceKind.SOURCE_KIND_GIT) {
      return fetchGit(
        { url: source.url, ref: source.gitRef },
        {
          blobs: deps.blobs,
          limits: settings.limits,
          workDir: deps.workDir,
          target,
          gitBinary: settings.gitBinary,
          ...(settings.caFile ? { caFile: settings.caFile } : {}),
          ...(signal ? { signal } : {}),
        },
      );
    }
    if (source.kind === SourceKind.SOURCE_KIND_TARBALL) {
      caPem ??= settings.caFile ? await readFile(settings.caFile, "utf8") : "";
      return fetchTarball(source.url, {
        blobs: deps.blobs,
        limits: settings.limits,
        workDir: deps.workDir,
        target,
        maxRedirects: settings.maxRedirects,
        ...(caPem ? { ca: caPem } : {}),
        ...(signal ? { signal } : {}),
      });
    }
    throw new FailedPreconditionError("source refused (UNSUPPORTED_KIND)");
  };
}

export interface RegisteredSources {
  sources: Sources;
  /**
   * For the blob collector: true while a source needs the blob — it is a
   * snapshot's manifest (kept for good, for diffs) or a file of a
   * materialised snapshot.
   */
  isReferenced(sha256: string): Promise<boolean>;
}

/** Adds SourceService, its projection and read model to the platform. */
export function registerSourceService(
  p: Platform,
  config: SourcesConfig,
  deps: SourceServiceDeps,
): RegisteredSources {
  const settings = sourceSettings(config);
  const sources = new Sources({
    store: p.store,
    blobs: deps.blobs,
    fetch: sourceFetcher(settings, deps),
    settings,
  });
  p.projector(sourcesProjection);
  const readModel = new SourcesReadModel(p.sql);
  p.addGuardedService(
    SourceServiceService,
    sourceService(sources, readModel),
    sourcePolicies,
    sourceRules(settings.allowedPorts),
  );
  // Manifests are immutable: their file hashes are cached by ref (bounded).
  const filesOf = new Map<string, Set<string>>();
  const manifestFiles = async (ref: string) => {
    let set = filesOf.get(ref);
    if (!set) {
      set = new Set((await sources.manifest(ref)).map((e) => e.sha256));
      filesOf.set(ref, set);
      if (filesOf.size > 256) filesOf.delete(filesOf.keys().next().value ?? "");
    }
    return set;
  };
  return {
    sources,
    isReferenced: async (sha256) => {
      if (await readModel.isManifest(sha256)) return true;
      for (const ref of await readModel.materialisedRefs())
        if ((await manifestFiles(ref)).has(sha256)) return true;
      return false;
    },
  };
}
