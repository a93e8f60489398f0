import { defineConfig } from "vitest/config";

// Workspace packages are resolved to their TypeScript sources ("@spool/source" export
// condition), so tests never depend on a prior build.
const conditions = ["@spool/source", "node", "import", "default"];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ["@spool/source"] } },
  test: {
    // 2 cores: two files at a time keeps real-server tests from starving each other.
    maxWorkers: 2,
    fileParallelism: true,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ["default", "./packages/testing/src/summary-reporter.ts"],
    globalSetup: ["./packages/testing/src/global-setup.ts"],
    projects: [
      {
        extends: true,
        test: { name: "unit", include: ["packages/**/*.unit.test.ts", "services/**/*.unit.test.ts"] },
      },
      {
        extends: true,
        test: { name: "integration", include: ["packages/**/*.int.test.ts", "services/**/*.int.test.ts"] },
      },
    ],
  },
});
