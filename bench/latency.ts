/** Percentiles of a list of latencies (ms), as the load generator reports them. */
export interface LatencySummary {
  p50: number;
  p90: number;
  p99: number;
  mean: number;
}

export function summarise(ms: number[]): LatencySummary {
  if (ms.length === 0) return { p50: NaN, p90: NaN, p99: NaN, mean: NaN };
  const sorted = [...ms].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return {
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    mean: sorted.reduce((s, v) => s + v, 0) / sorted.length,
  };
}
