// Number formats and the markdown table the benchmarks print their figures in.

/** A count or a rate, rounded, with thousands separators. */
export const fmtCount = (n: number): string => Math.round(n).toLocaleString("en-US");

/** Milliseconds with sensible precision; "—" for no value (NaN, or null once a NaN went through JSON). */
export const fmtMs = (n: number | null): string =>
  n === null || Number.isNaN(n) ? "—" : n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);

export const fmtPct = (n: number, digits = 0): string => `${(n * 100).toFixed(digits)}%`;

/** A markdown table: a header row, then one row of cells each. */
export function markdownTable(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.join(" | ")} |`;
  return [line(head), line(head.map(() => "---")), ...rows.map(line)].join("\n");
}
