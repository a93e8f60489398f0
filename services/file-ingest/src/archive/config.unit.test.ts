import { loadConfig } from "@spool/kit";
import { describe, expect, it } from "vitest";
import { DEFAULT_ARCHIVE_LIMITS } from "./archive.js";
import { archiveLimitsConfigShape, archiveLimitsFromConfig } from "./config.js";

describe("archive limits from the environment", () => {
  it("default to DEFAULT_ARCHIVE_LIMITS", () => {
    expect(archiveLimitsFromConfig(loadConfig(archiveLimitsConfigShape, {}))).toEqual(DEFAULT_ARCHIVE_LIMITS);
  });

  it("read SPOOL_ARCHIVE_* and refuse nonsense", () => {
    const limits = archiveLimitsFromConfig(
      loadConfig(archiveLimitsConfigShape, {
        SPOOL_ARCHIVE_MAX_ENTRIES: "5",
        SPOOL_ARCHIVE_MAX_NESTING_DEPTH: "0",
      }),
    );
    expect(limits).toEqual({ ...DEFAULT_ARCHIVE_LIMITS, maxEntries: 5, maxNestingDepth: 0 });
    expect(() => loadConfig(archiveLimitsConfigShape, { SPOOL_ARCHIVE_MAX_RATIO: "0" })).toThrow(
      /SPOOL_ARCHIVE_MAX_RATIO/u,
    );
  });
});
