import type { Redis } from 'ioredis';
import type { Queue } from 'bullmq';

/**
 * Decoding of asynchronous requests' images at the inference process's pace. A 400-image list
 * reaches `pre-async` in a few hundred milliseconds; decoded all at once, its images take the
 * `pre` processes' cores and Redis from synchronous requests for that long (and a list of
 * photos would hold all its pixels in Redis: 1.2 MB per 640×640 image). The model takes them
 * a batch at a time, paced further while synchronous images arrive (services/infer/batcher.ts).
 * So each `pre` process decodes one asynchronous image at a time, and only while fewer than
 * `ahead` decoded asynchronous images wait in Redis for the model (`infer-async`'s wait list
 * and prioritized set); otherwise it checks again every `pollMs`.
 */
export interface AsyncPacingOptions {
  /** Decoded asynchronous images waiting in Redis for the model. */
  backlog: () => Promise<number>;
  /** Most decoded images that may wait before the next is decoded. */
  ahead: number;
  /** Interval of the checks while the model is behind, ms. */
  pollMs: number;
}

/** Images decoded ahead of the model: one batch of eight, enough to start a full batch. */
export const ASYNC_DECODED_AHEAD = 8;
/** How often a waiting `pre` process looks again: a tenth of a typical CPU batch, ms. */
export const ASYNC_PACING_POLL_MS = 50;

/** Holds each asynchronous image until the model is ready for it (see AsyncPacingOptions). */
export class AsyncPacer {
  private closed = false;
  private readonly wakers = new Set<() => void>();

  constructor(private readonly opts: AsyncPacingOptions) {}

  /**
   * Resolves once fewer than `ahead` decoded images wait, at `deadline` (epoch ms), after
   * close(), or at once when the backlog cannot be read (the job then runs and meets Redis's
   * trouble in its own steps, with their retries). Never rejects.
   */
  async waitForRoom(deadline: number): Promise<void> {
    while (!this.closed && Date.now() < deadline) {
      let waiting: number;
      try {
        waiting = await this.opts.backlog();
      } catch {
        return;
      }
      if (waiting < this.opts.ahead) return;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.wakers.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, Math.min(this.opts.pollMs, deadline - Date.now()));
        this.wakers.add(wake);
      });
    }
  }

  /** Ends every wait now (the process is stopping: its held job finishes). Idempotent. */
  close(): void {
    this.closed = true;
    for (const wake of [...this.wakers]) wake();
  }
}

/**
 * The number of jobs `queue` holds that no worker has taken yet: its wait list (`paused` while
 * the queue is paused) and its prioritized set, in one round trip.
 */
export async function waitingJobs(client: Redis, queue: Queue): Promise<number> {
  const [wait, paused, prioritized] = ['wait', 'paused', 'prioritized'].map((k) => queue.keys[k]);
  if (wait === undefined || paused === undefined || prioritized === undefined)
    throw new Error('BullMQ names no wait, paused or prioritized key');
  const results = await client.pipeline().llen(wait).llen(paused).zcard(prioritized).exec();
  let n = 0;
  for (const [err, value] of results ?? []) {
    if (err) throw err;
    n += Number(value);
  }
  return n;
}
