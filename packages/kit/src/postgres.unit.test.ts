import { describe, expect, it } from "vitest";
import { baseConfigShape, ConfigError, loadConfig } from "./config.js";
import { createPool, schemaNameProblem } from "./postgres.js";

describe("a service's database schema name", () => {
  it("allows plain lowercase identifiers only, and no system or shared schema", () => {
    for (const ok of ["auth", "generation_stream", "_x1"]) expect(schemaNameProblem(ok)).toBeUndefined();
    for (const bad of [
      "",
      "Auth",
      "gen-stream",
      "1x",
      "a;drop",
      'a"b',
      "x".repeat(64),
      "public",
      "pg_temp",
      "information_schema",
    ]) {
      expect(schemaNameProblem(bad), bad).toBeDefined();
      expect(() => createPool({ url: "postgres://127.0.0.1/x", schema: bad })).toThrow(/invalid schema name/);
    }
  });

  it("SPOOL_DATABASE_SCHEMA is validated at start, by its full name", () => {
    expect(loadConfig(baseConfigShape, {}).DATABASE_SCHEMA).toBeUndefined();
    expect(loadConfig(baseConfigShape, { SPOOL_DATABASE_SCHEMA: "gen_eu" }).DATABASE_SCHEMA).toBe("gen_eu");
    for (const bad of ["public", "a;drop table x"]) {
      let error: unknown;
      try {
        loadConfig(baseConfigShape, { SPOOL_DATABASE_SCHEMA: bad });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).problems.join("\n")).toMatch(/^SPOOL_DATABASE_SCHEMA: /);
      // Values are never echoed back.
      expect((error as ConfigError).problems.join("\n")).not.toContain("drop");
    }
  });
});
