import type { Reporter, TestModule } from "vitest/node";

/**
 * Prints one closing line, "vitest: N passed, N failed, N skipped", counting
 * every test of the run; a file that failed to load counts as one failure, so
 * a broken suite can never read as a clean run.
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const mod of testModules) {
      let tests = 0;
      for (const test of mod.children.allTests()) {
        tests++;
        const state = test.result().state;
        if (state === "passed") passed++;
        else if (state === "failed") failed++;
        else skipped++;
      }
      if (tests === 0 || (mod.state() === "failed" && mod.errors().length > 0)) failed++;
    }
    process.stdout.write(`\nvitest: ${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
