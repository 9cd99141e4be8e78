/**
 * Reading Prometheus text exposition from the roles' /metrics endpoints, and the differences
 * of histogram sums and counts between two scrapes (what happened during one load step).
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function parseProm(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

export async function scrape(urls: readonly string[]): Promise<Sample[]> {
  const texts = await Promise.all(
    urls.map(async (u) => {
      try {
        return await (await fetch(u)).text();
      } catch {
        return '';
      }
    }),
  );
  return texts.flatMap(parseProm);
}

/** Sum of every sample named `name` whose labels include `match`. */
export function total(
  samples: readonly Sample[],
  name: string,
  match: Record<string, string> = {},
) {
  let sum = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  }
  return sum;
}

/** Mean of a histogram over the interval between two scrapes; null when nothing was observed. */
export function histogramMean(
  before: readonly Sample[],
  after: readonly Sample[],
  name: string,
  match: Record<string, string> = {},
): number | null {
  const count = total(after, `${name}_count`, match) - total(before, `${name}_count`, match);
  const sum = total(after, `${name}_sum`, match) - total(before, `${name}_sum`, match);
  return count > 0 ? sum / count : null;
}
