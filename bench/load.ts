import autocannon, { type RawRequest } from 'autocannon';
import { summarise, type LatencySummary } from './latency.js';

/**
 * HTTP load with autocannon: `connections` clients, each sending the next body of a rotating
 * set as soon as its previous answer arrived (closed loop). One run of warm-up, then the
 * measured window: only answers that arrive inside the window count. The warm-up lasts at least
 * `warmupSeconds` and until `connections` answers arrived (at most MAX_WARMUP_SECONDS), so the
 * window sees the system in its steady state, its queues filled to this concurrency, even when
 * one answer takes longer than the warm-up. The progress bar goes to stderr.
 */
export interface LoadStep {
  connections: number;
  /** Length of the measured window. */
  seconds: number;
  /** Successful (2xx) answers per second in the window. */
  requestsPerSecond: number;
  /** Latency of the successful answers of the window. */
  latencyMs: LatencySummary;
  ok: number;
  non2xx: number;
  /** Connection errors and timeouts over the whole run. */
  errors: number;
}

export interface LoadWindow {
  warmupSeconds: number;
  seconds: number;
  /**
   * The window lasts, beyond `seconds`, until this many 2xx answers arrived in it (at most
   * MAX_WARMUP_SECONDS more), so a percentile always rests on enough requests.
   */
  minAnswers?: number;
  /** Called when the measured window opens and closes (to start and stop other meters). */
  onOpen?: () => void;
  onClose?: () => void;
}

const MAX_WARMUP_SECONDS = 120;

export async function runLoad(
  url: string,
  bodies: readonly Buffer[],
  connections: number,
  window: LoadWindow,
  label: string,
): Promise<LoadStep> {
  let next = 0;
  let open = false;
  const latencies: number[] = [];
  let non2xx = 0;
  const instance = autocannon(
    {
      url: `${url}/infer/object_detection`,
      connections,
      // Stopped by stop() once the window closes.
      duration: MAX_WARMUP_SECONDS + window.seconds + 60,
      timeout: 60,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      requests: [
        {
          setupRequest: (req: RawRequest) => ({ ...req, body: bodies[next++ % bodies.length]! }),
        },
      ],
    },
    () => {},
  );
  let answered = 0;
  instance.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
    answered++;
    if (!open) return;
    if (status >= 200 && status < 300) latencies.push(ms);
    else non2xx++;
  });
  autocannon.track(instance, {
    outputStream: process.stderr,
    renderProgressBar: true,
    renderResultsTable: false,
    progressBarString: `  ${label} [:bar] :percent`,
  });
  const done = new Promise<{ errors: number; timeouts: number }>((resolve) =>
    instance.once('done', resolve),
  );
  await sleep(window.warmupSeconds * 1000);
  const warmupUntil = performance.now() + (MAX_WARMUP_SECONDS - window.warmupSeconds) * 1000;
  while (answered < connections && performance.now() < warmupUntil) await sleep(100);
  window.onOpen?.();
  const openedAt = performance.now();
  open = true;
  await sleep(window.seconds * 1000);
  const extendUntil = performance.now() + MAX_WARMUP_SECONDS * 1000;
  while (latencies.length < (window.minAnswers ?? 0) && performance.now() < extendUntil)
    await sleep(20);
  open = false;
  const closedAt = performance.now();
  window.onClose?.();
  instance.stop();
  const result = await done;
  const seconds = (closedAt - openedAt) / 1000;
  const l = summarise(latencies);
  return {
    connections,
    seconds: Math.round(seconds * 100) / 100,
    requestsPerSecond: Math.round((latencies.length / seconds) * 10) / 10,
    latencyMs: { p50: r(l.p50), p90: r(l.p90), p99: r(l.p99), mean: r(l.mean) },
    ok: latencies.length,
    non2xx,
    errors: result.errors + result.timeouts,
  };
}

function r(v: number): number {
  return Math.round(v * 10) / 10;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
