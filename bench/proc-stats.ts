import { readdirSync, readFileSync } from 'node:fs';

/**
 * CPU time and resident size of processes, read from /proc (Linux). The benchmark charges a
 * system with the CPU of every process it runs on (Redis included), so systems that spread
 * work over several processes are compared fairly with one that does everything in one.
 */
const TICKS_PER_SECOND = 100; // USER_HZ; 100 on every Linux the project targets.

/** User + system CPU seconds of one process (all its threads); 0 once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may contain spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

/** Resident set size in bytes; 0 once the process is gone. */
export function rssBytes(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = /^VmRSS:\s+(\d+)/m.exec(status)?.[1];
    return kb ? Number(kb) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** The command line of a process, '' once it is gone. */
export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

/** Every live descendant of `root` (children, grandchildren, …). */
export function descendants(root: number): number[] {
  const parentOf = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parentOf.set(Number(name), ppid);
    } catch {
      // Exited while listing.
    }
  }
  const found: number[] = [];
  const frontier = [root];
  while (frontier.length > 0) {
    const p = frontier.pop()!;
    for (const [child, parent] of parentOf) {
      if (parent === p) {
        found.push(child);
        frontier.push(child);
      }
    }
  }
  return found;
}

/** Named processes whose CPU is measured between two points in time. */
export class CpuMeter {
  private start = new Map<string, number>();
  private startedAt = 0;

  constructor(private readonly procs: ReadonlyMap<string, number>) {}

  begin(): void {
    this.startedAt = performance.now();
    this.start = new Map([...this.procs].map(([name, pid]) => [name, cpuSeconds(pid)]));
  }

  /** CPU seconds each process used since begin(), and the wall seconds elapsed. */
  end(): { wallSeconds: number; cpuSeconds: Record<string, number>; totalCpuSeconds: number } {
    const wallSeconds = (performance.now() - this.startedAt) / 1000;
    const used: Record<string, number> = {};
    let total = 0;
    for (const [name, pid] of this.procs) {
      const s = cpuSeconds(pid) - (this.start.get(name) ?? 0);
      used[name] = s;
      total += s;
    }
    return { wallSeconds, cpuSeconds: used, totalCpuSeconds: total };
  }

  /** Resident size of each process now, in MiB. */
  rssMiB(): Record<string, number> {
    return Object.fromEntries(
      [...this.procs].map(([name, pid]) => [name, round(rssBytes(pid) / 2 ** 20, 1)]),
    );
  }
}

export function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
