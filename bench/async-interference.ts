import { parseArgs } from 'node:util';
import { runLoad, type LoadStep } from './load.js';
import { histogramMean, scrape, type Sample } from './prom.js';
import { ROOT, startPipeline } from './systems.js';
import { jsonBodies, loadImages, workload } from './workloads.js';

/**
 * Does a large asynchronous list slow down synchronous users? Starts the pipeline as `npm
 * start` runs it (its own Redis; `--model yolov8n`, the default, yolov8n at 640 on the COCO128
 * JPEGs resized to 160 px wide, the null workload's images, or `--model tiny`, the generated tiny
 * detector on drawn 320×240 PNGs), measures the latency of synchronous requests
 * at a few concurrencies alone, then again while asynchronous lists of hundreds of small images
 * keep the pipeline busy (a new list as soon as the previous one finished), and prints both
 * with the mean time of one batch in each window. The target (issue: asynchronous requests) is
 * that p99 with the lists stays within one batch of p99 alone, since synchronous jobs go first
 * in every queue and into the next batch.
 *
 *   npx tsx bench/async-interference.ts [--model yolov8n] [--seconds 30] [--connections 1,4] [--list 400]
 */
const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '30' },
    connections: { type: 'string', default: '1,4' },
    list: { type: 'string', default: '400' },
    warmup: { type: 'string', default: '2' },
    model: { type: 'string', default: 'yolov8n' },
  },
});
if (values.model !== 'tiny' && values.model !== 'yolov8n')
  throw new Error(`--model is tiny or yolov8n, not '${values.model}'`);
const modelName = values.model;
const seconds = Number(values.seconds);
const warmupSeconds = Number(values.warmup);
const connections = values.connections.split(',').map(Number);
const listSize = Number(values.list);

const wl =
  modelName === 'tiny' ? workload('tiny') : { ...workload('yolov8n'), describe: 'yolov8n' };
const images = await loadImages(modelName === 'tiny' ? 'tiny' : 'null');
const bodies = jsonBodies(images, wl.confidence);
const system = await startPipeline(wl, {
  root: ROOT,
  preProcesses: 1,
  postProcesses: 1,
  env: { MAX_BODY_BYTES: String(64 * 1024 * 1024) },
});
const listBody = JSON.stringify({
  image: Array.from({ length: listSize }, (_, i) => ({
    type: 'base64',
    value: images[i % images.length]!.toString('base64'),
  })),
  confidence: wl.confidence,
});

interface Window {
  step: LoadStep;
  /** Mean model run per batch over the window, ms. */
  batchMs: number | null;
  /** Mean batch size over the window. */
  batchSize: number | null;
  asyncImages: number;
}

/** How often the background client polls its list's status, ms. */
const POLL_MS = 500;

/**
 * fetch, tried once more when the connection fails (a kept-alive connection the server closed
 * just as it was reused).
 */
async function fetchRetried(url: string, init?: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch {
    return fetch(url, init);
  }
}

/** Submits lists one after the other until stopped; counts the images finished. */
function asyncBackground(): { stop: () => Promise<number> } {
  let running = true;
  let done = 0;
  const loop = (async () => {
    while (running) {
      const res = await fetchRetried(`${system.url}/async/infer/object_detection`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: listBody,
      });
      if (res.status !== 202)
        throw new Error(`async submit: HTTP ${res.status} ${await res.text()}`);
      const { status_url } = (await res.json()) as { status_url: string };
      for (;;) {
        const status = (await (await fetchRetried(`${system.url}${status_url}`)).json()) as {
          status: string;
          images_done: number;
        };
        if (status.status === 'completed' || status.status === 'failed') {
          done += status.images_done;
          break;
        }
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    }
  })();
  // Its failure is reported by stop(), not as an unhandled rejection meanwhile.
  loop.catch(() => {});
  return {
    stop: async () => {
      running = false;
      await loop;
      return done;
    },
  };
}

async function measure(c: number, withAsync: boolean): Promise<Window> {
  const background = withAsync ? asyncBackground() : undefined;
  let before: Sample[] = [];
  let after: Sample[] = [];
  let opened: Promise<unknown> = Promise.resolve();
  let closed: Promise<unknown> = Promise.resolve();
  const step = await runLoad(
    system.url,
    bodies,
    c,
    {
      warmupSeconds,
      seconds,
      onOpen: () => {
        opened = scrape(system.metricsUrls).then((s) => (before = s));
      },
      onClose: () => {
        closed = scrape(system.metricsUrls).then((s) => (after = s));
      },
    },
    `${withAsync ? 'with async' : 'alone     '} c=${c}`,
  );
  const asyncImages = (await background?.stop()) ?? 0;
  await Promise.all([opened, closed]);
  const run = histogramMean(before, after, 'sd_inference_run_seconds');
  const size = histogramMean(before, after, 'sd_inference_batch_size');
  return {
    step,
    batchMs: run === null ? null : Math.round(run * 10000) / 10,
    batchSize: size === null ? null : Math.round(size * 10) / 10,
    asyncImages,
  };
}

try {
  await main();
} catch (err) {
  const cause = err instanceof Error ? (err.cause as Error | undefined) : undefined;
  process.stderr.write(
    `async interference failed: ${err instanceof Error ? err.stack : String(err)}\n` +
      (cause ? `caused by: ${cause.stack ?? String(cause)}\n` : ''),
  );
  process.exitCode = 1;
} finally {
  await system.stop();
}

async function main(): Promise<void> {
  const rows: string[] = [];
  for (const c of connections) {
    const alone = await measure(c, false);
    const busy = await measure(c, true);
    const p99 = (w: Window) => w.step.latencyMs.p99;
    const added = Math.round((p99(busy) - p99(alone)) * 10) / 10;
    const within = busy.batchMs !== null && added <= busy.batchMs;
    rows.push(
      [
        c,
        alone.step.requestsPerSecond,
        alone.step.latencyMs.p50,
        p99(alone),
        busy.step.requestsPerSecond,
        busy.step.latencyMs.p50,
        p99(busy),
        added,
        busy.batchMs ?? '-',
        busy.batchSize ?? '-',
        busy.asyncImages,
        within ? 'yes' : 'no',
      ].join('\t'),
    );
  }
  process.stdout.write(
    `async interference: ${modelName} model, lists of ${listSize} images, ${seconds} s windows\n` +
      'c\tsync/s\tp50\tp99\tsync/s+async\tp50\tp99\tp99 added (ms)\tbatch (ms)\tbatch size\tasync images done\twithin one batch\n' +
      `${rows.join('\n')}\n`,
  );
}
