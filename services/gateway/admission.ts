import type { Queue } from 'bullmq';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';

/**
 * Admission control: a gateway holds at most `maxInflight` inference requests, and takes none
 * while the `pre` queue's backlog is at `maxQueueDepth` or more. Refusal is immediate and
 * cheap (before the body is read), so memory stays bounded whatever the request rate. The
 * backlog is read from Redis every REFRESH_MS in the background (one command per gateway
 * process, whatever the request rate); a request never waits for it.
 */
const REFRESH_MS = 200;

export class Admission {
  private inflight = 0;
  private backlog = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly maxInflight: number,
    private readonly maxQueueDepth: number,
    preQueue: Queue,
    log: Logger,
  ) {
    let reading = false;
    this.timer = setInterval(() => {
      if (reading) return;
      reading = true;
      preQueue
        .getWaitingCount()
        .then((n) => {
          this.backlog = n;
        })
        .catch((err: unknown) => log.warn({ err }, 'could not read the pre queue backlog'))
        .finally(() => {
          reading = false;
        });
    }, REFRESH_MS);
    this.timer.unref();
  }

  /** Takes a slot, or throws OVERLOADED. The returned release is safe to call more than once. */
  admit(): () => void {
    if (this.inflight >= this.maxInflight) {
      throw new PipelineError(
        ErrorCode.OVERLOADED,
        `the gateway is at its limit of ${this.maxInflight} requests in flight; retry later`,
      );
    }
    if (this.backlog >= this.maxQueueDepth) {
      throw new PipelineError(
        ErrorCode.OVERLOADED,
        `${this.backlog} images are already waiting to be processed; retry later`,
      );
    }
    this.inflight++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.inflight--;
    };
  }

  /** Stops reading the backlog. */
  close(): void {
    clearInterval(this.timer);
  }
}
