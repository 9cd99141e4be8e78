import type { Role } from '../../services/supervisor/processes.js';
import type { RunningRole, Stack } from './stack.js';

/** Reading Prometheus text from the stack's roles in tests. */

/** Sum of the samples of a metric whose labels include all of `labels`. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const x of (m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)) have.set(x[1]!, x[2]!);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) total += Number(m[3]);
  }
  return total;
}

/** The /metrics URL a worker process logged at startup. */
export function metricsUrl(proc: RunningRole): string {
  for (const line of proc.output) {
    const url = /"metrics":"([^"]+)"/.exec(line)?.[1];
    if (url) return url;
  }
  throw new Error(`${proc.role} logged no metrics URL`);
}

/** Metrics of the gateway, or of the newest live process of a worker role. */
export async function scrape(stack: Stack, role: Role): Promise<string> {
  if (role === 'gateway') return (await fetch(`${stack.url}/metrics`)).text();
  const proc = stack.roles.findLast(
    (r) => r.role === role && r.process.exitCode === null && r.process.signalCode === null,
  );
  if (!proc) throw new Error(`no live ${role} process`);
  return (await fetch(metricsUrl(proc))).text();
}
