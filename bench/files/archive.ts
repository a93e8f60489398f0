// Archive expansion rate (entries/s, MB/s) beside the raw libraries' own
// rate on the same archive and disk, measured in one run:
//   cd bench && node --conditions=@spool/source --import tsx ./files/archive.ts
// SPOOL_BENCH_ARCHIVE_ENTRIES (default 2000) and SPOOL_BENCH_ARCHIVE_MEAN_BYTES
// (default 24576) size the workload; SPOOL_BENCH_TMP picks the disk.
// Not a timed test: it prints what it measured.
import {
  type ArchiveBenchFigure,
  measureArchiveExpansion,
} from "../../services/file-ingest/src/archive/benchmark.test.js";

function rate(figure: ArchiveBenchFigure): string {
  const entries = Math.round(figure.entries / figure.seconds).toLocaleString("en-US");
  const mb = (figure.bytes / 1e6 / figure.seconds).toFixed(1);
  return `${entries.padStart(8)} entries/s  ${mb.padStart(7)} MB/s  (${figure.seconds.toFixed(2)} s)`;
}

const entries = Number(process.env.SPOOL_BENCH_ARCHIVE_ENTRIES ?? 2000);
const meanBytes = Number(process.env.SPOOL_BENCH_ARCHIVE_MEAN_BYTES ?? 24 * 1024);
const results = await measureArchiveExpansion({
  entries,
  meanBytes,
  ...(process.env.SPOOL_BENCH_TMP ? { tmpBase: process.env.SPOOL_BENCH_TMP } : {}),
});
for (const r of results) {
  const expanded = (r.spool.bytes / 1e6).toFixed(1);
  console.log(
    `archive expansion, ${r.format}: ${r.spool.entries} entries, ${expanded} MB expanded from ${(r.archiveBytes / 1e6).toFixed(1)} MB`,
  );
  for (const figure of [r.spool, r.rawWrite, r.rawRead])
    console.log(`  ${figure.label.padEnd(46)} ${rate(figure)}`);
  const share = (r.rawWrite.seconds / r.spool.seconds) * 100;
  console.log(`  spool / raw with write: ${share.toFixed(0)} % of the raw rate`);
}
