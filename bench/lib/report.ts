// The figures table: each figure beside its raw limit from the same run, the
// ratio, the target from the issue and whether it is met.
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { CpuShare } from "./cpu.js";
import type { Machine } from "./infra.js";
import type { Measurement } from "./measure.js";
import { fmtCount, fmtPct } from "./table.js";
import type { Checksum } from "./workload.js";

export interface Check {
  text: string;
  pass: boolean;
}

export interface Figure {
  measurement: Measurement;
  /** The raw limits this figure is a fraction of; the first is the one its target refers to. */
  limits: Measurement[];
  checks: Check[];
}

/**
 * Round-by-round ratios of a figure to its first limit, when both ran the
 * same number of interleaved rounds: each pair ran back to back, under the
 * same conditions, so their spread shows how firm the headline ratio is.
 */
export function pairedRatios(f: Figure): number[] | undefined {
  const limit = f.limits[0];
  if (!limit || limit.rounds.length !== f.measurement.rounds.length || limit.rounds.length < 2)
    return undefined;
  return f.measurement.rounds.map((r, i) => r.rate / (limit.rounds[i]?.rate ?? Number.NaN));
}

export interface Verification {
  label: string;
  /** A wrong kit read model fails the run; a wrong peer read model is a finding. */
  scope: "kit" | "peer";
  checksum: Checksum;
  expected: Checksum;
  pass: boolean;
}

export interface Report {
  startedAt: string;
  commit: string | undefined;
  machine: Machine;
  settings: Record<string, number | string | boolean>;
  figures: Figure[];
  verifications: Verification[];
  notes: string[];
}

const ratios = (f: Figure): number[] => f.limits.map((l) => f.measurement.rate / l.rate);
/** Short names of the raw limits, for the table's limit column. */
const SHORT: Readonly<Record<string, string>> = {
  "raw.publish": "publish",
  "raw.consume": "consume+ack",
  "raw.consume.ordered": "ordered",
};
const limitsText = (f: Figure, sep: string): string =>
  f.limits.length === 0
    ? "—"
    : f.limits.map((l) => `${fmtCount(l.rate)} ${SHORT[l.key] ?? l.label}`).join(sep);
const ratiosText = (f: Figure, sep: string): string =>
  f.limits.length === 0
    ? "—"
    : ratios(f)
        .map((r) => fmtPct(r))
        .join(sep);
const cpuText = (cpu: CpuShare | undefined): string =>
  cpu
    ? `bench ${cpu.bench.toFixed(2)} + servers ${cpu.servers.toFixed(2)} + other ${cpu.other.toFixed(2)} CPUs`
    : "";
const spread = (m: Measurement): string => {
  const rounds = m.rounds.map(
    (r) => `${fmtCount(r.rate)}${r.cpu ? ` (other ${r.cpu.other.toFixed(2)})` : ""}`,
  );
  const head = m.rounds.length < 2 ? "1 round" : `best of ${m.rounds.length}`;
  return `${head}: ${rounds.join(", ")}; best round ${cpuText(m.cpu)}`;
};
const resultText = (f: Figure): string =>
  f.checks.length === 0 ? "—" : f.checks.every((c) => c.pass) ? "PASS" : "FAIL";

/** A check that the figure reaches a fraction of its raw limit. */
export function atLeastRatio(m: Measurement, limit: Measurement, min: number): Check {
  return { text: `≥ ${fmtPct(min)} of ${SHORT[limit.key] ?? limit.label}`, pass: m.rate / limit.rate >= min };
}

export function atLeastRate(m: Measurement, min: number): Check {
  return { text: `≥ ${fmtCount(min)}/s`, pass: m.rate >= min };
}

export function aheadOf(m: Measurement, peer: Measurement | undefined): Check {
  if (!peer) return { text: "ahead of peer (peer skipped)", pass: false };
  return { text: `> ${peer.label} (×${(m.rate / peer.rate).toFixed(1)})`, pass: m.rate > peer.rate };
}

function pad(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

export function renderTable(figures: readonly Figure[]): string {
  const rows = figures.map((f) => [
    f.measurement.label,
    fmtCount(f.measurement.rate),
    limitsText(f, " · "),
    ratiosText(f, " · "),
    f.checks.length === 0 ? "—" : f.checks.map((c) => `${c.pass ? "✓" : "✗"} ${c.text}`).join("; "),
    resultText(f),
  ]);
  const head = ["figure", "events/s", "raw limit (events/s)", "ratio", "target", "result"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => pad(c, widths[i] ?? 0, i === 1))
      .join("  ")
      .trimEnd();
  return [line(head), widths.map((w) => "─".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

/** One line per figure: how it was measured and every round's rate. */
export function renderDetails(figures: readonly Figure[]): string {
  return figures
    .map((f) => {
      const paired = pairedRatios(f);
      const limit = f.limits[0];
      const pairs =
        paired && limit
          ? `; round by round vs ${SHORT[limit.key] ?? limit.label}: ${paired.map((r) => fmtPct(r)).join(", ")}`
          : "";
      return `- ${f.measurement.label}: ${f.measurement.detail} [${spread(f.measurement)}${pairs}]`;
    })
    .join("\n");
}

export function renderVerifications(vs: readonly Verification[]): string {
  return vs
    .map(
      (v) =>
        `${v.pass ? "✓" : "✗"} ${v.label}: ${v.checksum.rows} rows, total ${v.checksum.total}, ` +
        `${v.checksum.increments} increments, digest ${v.checksum.digest}` +
        (v.pass
          ? " = expected"
          : ` ≠ expected (${v.expected.rows} rows, total ${v.expected.total}, digest ${v.expected.digest})`),
    )
    .join("\n");
}

export function renderMarkdownTable(figures: readonly Figure[]): string {
  const out = [
    "| figure | events/s | raw limit (events/s) | ratio | target | result |",
    "|---|--:|---|---|---|---|",
  ];
  for (const f of figures) {
    const checks = f.checks.map((c) => `${c.pass ? "✓" : "✗"} ${c.text}`).join("<br>") || "—";
    out.push(
      `| ${f.measurement.label} | ${fmtCount(f.measurement.rate)} | ${limitsText(f, "<br>")} | ` +
        `${ratiosText(f, "<br>")} | ${checks} | ${resultText(f)} |`,
    );
  }
  return out.join("\n");
}

/** bench/results/ (gitignored), where every benchmark writes its JSON. */
export const RESULTS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "results");

/** Writes a run's JSON as `<name->timestamp.json` in `dir`; returns the path. */
export async function writeResultFile(
  dir: string,
  name: string,
  startedAt: string,
  data: unknown,
): Promise<string> {
  await mkdir(dir, { recursive: true });
  const stamp = startedAt.replaceAll(":", "-").replace(/\.\d+Z$/, "Z");
  const file = path.join(dir, `${name === "" ? "" : `${name}-`}${stamp}.json`);
  await writeFile(file, `${JSON.stringify(data, null, 2)}\n`);
  return file;
}

/** Writes the report as JSON under bench/results/ (gitignored); returns the path. */
export async function writeReport(dir: string, report: Report): Promise<string> {
  return writeResultFile(dir, "", report.startedAt, {
    ...report,
    figures: report.figures.map((f) => ({
      ...f.measurement,
      limits: f.limits.map((l, i) => ({ key: l.key, rate: l.rate, ratio: ratios(f)[i] })),
      pairedRatios: pairedRatios(f),
      checks: f.checks,
      result: resultText(f),
    })),
  });
}
