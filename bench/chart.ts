import type { BenchResult } from './run.js';

/**
 * An SVG chart of a benchmark result, with no dependencies: for each workload, images/s and
 * p50 (solid) / p99 (dashed) latency against client concurrency, one colour per system.
 */
interface Series {
  label: string;
  colour: string;
  dashed?: boolean;
  points: Array<[number, number]>;
}

const COLOURS = { limit: '#2b8a3e', standard: '#1c7ed6', pipeline: '#e8590c' } as const;
const W = 460;
const H = 300;
const M = { left: 60, right: 20, top: 36, bottom: 44 };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
}

function panel(
  title: string,
  yLabel: string,
  xs: number[],
  series: Series[],
  log: boolean,
): string {
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v > 0);
  const max = values.length ? Math.max(...values) : 1;
  const min = values.length ? Math.min(...values) : 1;
  const lo = log ? 10 ** Math.floor(Math.log10(min)) : 0;
  const hi = log ? 10 ** Math.ceil(Math.log10(max)) : niceCeil(max);
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const xAt = (x: number) =>
    M.left + (xs.length <= 1 ? pw / 2 : (xs.indexOf(x) / (xs.length - 1)) * pw);
  const yAt = (y: number) =>
    M.top +
    ph -
    (log
      ? (Math.log10(Math.max(y, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))
      : y / hi) *
      ph;
  const out: string[] = [
    `<text x="${W / 2}" y="20" text-anchor="middle" font-weight="bold">${esc(title)}</text>`,
  ];
  const ticks = log
    ? Array.from({ length: Math.round(Math.log10(hi / lo)) + 1 }, (_, i) => lo * 10 ** i)
    : Array.from({ length: 6 }, (_, i) => (hi * i) / 5);
  for (const t of ticks) {
    out.push(
      `<line x1="${M.left}" x2="${W - M.right}" y1="${yAt(t)}" y2="${yAt(t)}" stroke="#ddd"/>`,
      `<text x="${M.left - 6}" y="${yAt(t) + 4}" text-anchor="end">${round(t)}</text>`,
    );
  }
  for (const x of xs) {
    out.push(`<text x="${xAt(x)}" y="${H - M.bottom + 16}" text-anchor="middle">${x}</text>`);
  }
  out.push(
    `<text x="${W / 2}" y="${H - 8}" text-anchor="middle">client concurrency</text>`,
    `<text transform="translate(14 ${M.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`,
  );
  for (const s of series) {
    const pts = s.points.filter((p) => xs.includes(p[0]) && p[1] > 0);
    if (pts.length === 0) continue;
    out.push(
      `<polyline fill="none" stroke="${s.colour}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 4"' : ''} points="${pts.map(([x, y]) => `${xAt(x)},${yAt(y)}`).join(' ')}"/>`,
      ...pts.map(([x, y]) => `<circle cx="${xAt(x)}" cy="${yAt(y)}" r="3" fill="${s.colour}"/>`),
    );
  }
  return out.join('\n');
}

function niceCeil(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((c) => c >= v) ?? v;
}

function round(v: number): string {
  return v >= 100
    ? v.toFixed(0)
    : v >= 1
      ? String(Math.round(v * 10) / 10)
      : String(Math.round(v * 100) / 100);
}

export function renderChart(r: BenchResult): string {
  const xs = r.options.concurrency;
  const rows = Object.entries(r.workloads);
  const panels: string[] = [];
  rows.forEach(([name, wr], i) => {
    const systems: Array<
      [keyof typeof COLOURS, Array<{ x: number; ips: number; p50: number; p99: number }>]
    > = [
      [
        'limit',
        (wr.limit?.levels ?? []).map((l) => ({
          x: l.inflight,
          ips: l.imagesPerSecond,
          p50: l.latencyMs.p50,
          p99: l.latencyMs.p99,
        })),
      ],
      [
        'standard',
        (wr.standard?.steps ?? []).map((s) => ({
          x: s.connections,
          ips: s.imagesPerSecond,
          p50: s.latencyMs.p50,
          p99: s.latencyMs.p99,
        })),
      ],
      [
        'pipeline',
        (wr.pipeline?.steps ?? []).map((s) => ({
          x: s.connections,
          ips: s.imagesPerSecond,
          p50: s.latencyMs.p50,
          p99: s.latencyMs.p99,
        })),
      ],
    ];
    const throughput = systems.map(([sys, pts]) => ({
      label: sys,
      colour: COLOURS[sys],
      points: pts.map((p): [number, number] => [p.x, p.ips]),
    }));
    const latency = systems.flatMap(([sys, pts]) => [
      {
        label: `${sys} p50`,
        colour: COLOURS[sys],
        points: pts.map((p): [number, number] => [p.x, p.p50]),
      },
      {
        label: `${sys} p99`,
        colour: COLOURS[sys],
        dashed: true,
        points: pts.map((p): [number, number] => [p.x, p.p99]),
      },
    ]);
    panels.push(
      `<g transform="translate(0 ${30 + i * H})">${panel(`${name}: throughput`, 'images/s', xs, throughput, false)}</g>`,
      `<g transform="translate(${W} ${30 + i * H})">${panel(`${name}: latency p50 (solid), p99 (dashed)`, 'ms (log)', xs, latency, true)}</g>`,
    );
  });
  const legend = Object.entries(COLOURS)
    .map(
      ([sys, c], i) =>
        `<rect x="${20 + i * 150}" y="10" width="14" height="14" fill="${c}"/><text x="${40 + i * 150}" y="22">${sys}</text>`,
    )
    .join('');
  const height = 30 + rows.length * H;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
${legend}
<text x="${2 * W - 10}" y="22" text-anchor="end" fill="#555">${esc(`${r.startedAt.slice(0, 16)} · ${r.machine.cores} cores`)}</text>
${panels.join('\n')}
</svg>
`;
}
