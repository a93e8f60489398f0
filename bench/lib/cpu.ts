// Where the machine's CPU went during a measurement (Linux /proc): this
// process, the servers (nats-server and every postgres process, whoever their
// client is), and everything else. On a shared 2-core machine "everything
// else" is the noise that slows a round; each figure records it.
import { readdirSync, readFileSync } from "node:fs";

interface Snapshot {
  /** Busy jiffies of the whole machine. */
  busy: number;
  self: number;
  servers: number;
  at: number;
}

export interface CpuShare {
  /** Average CPUs busy with this process. */
  bench: number;
  /** Average CPUs busy with nats-server and postgres. */
  servers: number;
  /** Average CPUs busy with anything else (other test runs, the OS). */
  other: number;
}

/** Linux USER_HZ: /proc reports CPU time in these ticks (jiffies). */
export const TICKS_PER_SECOND = 100;

/** utime + stime of a process, in jiffies; undefined when it is gone (or not on Linux). */
export function processJiffiesOf(pid: number | string): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name may hold spaces; fields restart after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined;
  }
}

/**
 * Jiffies of a process and of every live descendant (a service running as
 * cluster workers counts as one server).
 */
export function processTreeJiffiesOf(pid: number): number | undefined {
  const own = processJiffiesOf(pid);
  if (own === undefined) return undefined;
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // Gone meanwhile.
    }
  }
  let total = own;
  const queue = [...(children.get(pid) ?? [])];
  for (let c = queue.shift(); c !== undefined; c = queue.shift()) {
    total += processJiffiesOf(c) ?? 0;
    queue.push(...(children.get(c) ?? []));
  }
  return total;
}

/** Busy jiffies of the whole machine, from the first line of /proc/stat. */
export function machineBusyJiffies(): number | undefined {
  try {
    const cpu = readFileSync("/proc/stat", "utf8")
      .split("\n", 1)[0]
      ?.trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    if (!cpu || cpu.length < 5) return undefined;
    // user nice system idle iowait irq softirq steal ...
    const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0);
    return cpu.slice(0, 8).reduce((a, b) => a + b, 0) - idle;
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system) a process has used, from /proc; undefined elsewhere. */
export function processCpuSeconds(pid: number | "self"): number | undefined {
  const j = processJiffiesOf(pid);
  return j === undefined ? undefined : j / TICKS_PER_SECOND;
}

/** CPU seconds the whole machine has been busy, from /proc/stat. */
export function machineBusySeconds(): number | undefined {
  const j = machineBusyJiffies();
  return j === undefined ? undefined : j / TICKS_PER_SECOND;
}

/** Jiffies used by every process whose command name is one of `comms`, summed per name. */
export function jiffiesByComm(comms: readonly string[]): Record<string, number> {
  const byComm: Record<string, number> = Object.fromEntries(comms.map((c) => [c, 0]));
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
      if (comm in byComm) byComm[comm] = (byComm[comm] ?? 0) + (processJiffiesOf(pid) ?? 0);
    } catch {
      // The process ended between listing and reading.
    }
  }
  return byComm;
}

/** Average CPUs busy over a sample: per named process, per command name, and the whole machine. */
export interface CpuBreakdown {
  pids: Record<string, number>;
  comms: Record<string, number>;
  machine: number;
}

interface BreakdownSnapshot {
  at: number;
  busy: number;
  pids: Record<string, number>;
  comms: Record<string, number>;
}

function breakdownSnapshot(
  pids: Readonly<Record<string, SampledProcess>>,
  comms: readonly string[],
): BreakdownSnapshot | undefined {
  const busy = machineBusyJiffies();
  if (busy === undefined) return undefined;
  return {
    at: performance.now(),
    busy,
    pids: Object.fromEntries(
      Object.entries(pids).map(([name, pid]) => [
        name,
        (pid === "self"
          ? processJiffiesOf(pid)
          : typeof pid === "object"
            ? processJiffiesOf(pid.own)
            : processTreeJiffiesOf(pid)) ?? 0,
      ]),
    ),
    comms: jiffiesByComm(comms),
  };
}

/**
 * Starts a sample of where the CPUs go: each of `pids` (by the names given),
 * every process whose command name is in `comms`, and the whole machine.
 * The returned function ends it; undefined where /proc is not there.
 */
/** A process to sample: "self", a pid with its descendants, or `{ own: pid }` for that process alone. */
export type SampledProcess = number | "self" | { own: number };

export function sampleCpuOf(
  pids: Readonly<Record<string, SampledProcess>>,
  comms: readonly string[],
): () => CpuBreakdown | undefined {
  const a = breakdownSnapshot(pids, comms);
  return () => {
    const b = breakdownSnapshot(pids, comms);
    if (!a || !b) return undefined;
    const seconds = (b.at - a.at) / 1000;
    if (seconds <= 0) return undefined;
    const cores = (j: number) => Math.max(0, j) / TICKS_PER_SECOND / seconds;
    const diff = (x: Record<string, number>, y: Record<string, number>) =>
      Object.fromEntries(Object.keys(y).map((k) => [k, cores((y[k] ?? 0) - (x[k] ?? 0))]));
    return { pids: diff(a.pids, b.pids), comms: diff(a.comms, b.comms), machine: cores(b.busy - a.busy) };
  };
}

function snapshot(): Snapshot | undefined {
  const busy = machineBusyJiffies();
  const self = processJiffiesOf("self");
  if (busy === undefined || self === undefined) return undefined;
  const byComm = jiffiesByComm(["nats-server", "postgres"]);
  return {
    busy,
    self,
    servers: (byComm["nats-server"] ?? 0) + (byComm.postgres ?? 0),
    at: performance.now(),
  };
}

/** Starts a sample; call the returned function at the end of the measured region. */
export function sampleCpu(): () => CpuShare | undefined {
  const a = snapshot();
  return () => {
    const b = snapshot();
    if (!a || !b) return undefined;
    const seconds = (b.at - a.at) / 1_000;
    if (seconds <= 0) return undefined;
    const cores = (jiffies: number) => Math.max(0, jiffies / TICKS_PER_SECOND / seconds);
    const bench = cores(b.self - a.self);
    // Servers that started or ended in between can make the difference negative; clamp.
    const servers = cores(b.servers - a.servers);
    const other = Math.max(0, cores(b.busy - a.busy) - bench - servers);
    const round = (n: number) => Math.round(n * 100) / 100;
    return { bench: round(bench), servers: round(servers), other: round(other) };
  };
}

/** CPUs busy outside this process over a short window. */
async function foreignLoad(windowMs: number): Promise<number | undefined> {
  const a = snapshot();
  await new Promise((r) => setTimeout(r, windowMs));
  const b = snapshot();
  if (!a || !b) return undefined;
  const seconds = (b.at - a.at) / 1_000;
  return Math.max(0, (b.busy - a.busy - (b.self - a.self)) / TICKS_PER_SECOND / seconds);
}

/**
 * Waits, up to maxWaitMs, for the rest of the machine to go quiet (under
 * `threshold` CPUs busy outside this process), so a round is not measured
 * while another job (a parallel test run) holds the cores. Returns the load
 * last seen; the round goes ahead either way and records its CPU share.
 */
export async function waitForQuiet(maxWaitMs: number, threshold = 0.3): Promise<number | undefined> {
  if (maxWaitMs <= 0) return undefined;
  const deadline = Date.now() + maxWaitMs;
  let load = await foreignLoad(300);
  while (load !== undefined && load > threshold && Date.now() < deadline) {
    load = await foreignLoad(500);
  }
  return load;
}
