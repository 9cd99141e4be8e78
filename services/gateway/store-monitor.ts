import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { withTimeout } from '../../shared/deadline.js';
import type { Logger } from '../../shared/logger.js';
import { WAITING_STATES } from '../../shared/queues.js';

/**
 * What admission needs to know about Redis, read in the background so no request waits for
 * it: whether Redis answers at all, how full its memory is, and the `pre` backlog. One read
 * (two commands) every READ_INTERVAL_MS per gateway process, whatever the request rate; a read
 * that takes longer than READ_TIMEOUT_MS counts as no answer. Redis that stopped answering
 * (paused, stopped, gone) is seen within about READ_TIMEOUT_MS + READ_INTERVAL_MS.
 */
export const READ_INTERVAL_MS = 200;
export const READ_TIMEOUT_MS = 800;

export interface StoreState {
  /** Whether the latest read answered within READ_TIMEOUT_MS. */
  reachable: boolean;
  /** Redis `used_memory`, bytes. */
  usedMemory: number;
  /** Redis `maxmemory`, bytes; 0 when Redis has no limit. */
  maxMemory: number;
  /** Images waiting in the `pre` queue, in every state of work not yet started (WAITING_STATES). */
  backlog: number;
  /** Epoch ms of the latest read that answered. */
  readAt: number;
}

/** Reads Redis's state in the background for admission and readiness (see above). */
export class StoreMonitor {
  private state: StoreState = {
    reachable: true,
    usedMemory: 0,
    maxMemory: 0,
    backlog: 0,
    readAt: Date.now(),
  };
  private readonly timer: NodeJS.Timeout;
  private reading = false;

  /**
   * @param redis the gateway's command connection (a read queued behind a stuck command is
   *   exactly what a request would see)
   * @param preQueue the queue whose backlog admission limits
   */
  constructor(
    private readonly redis: Redis,
    private readonly preQueue: Queue,
    private readonly log: Logger,
  ) {
    this.timer = setInterval(() => void this.read(), READ_INTERVAL_MS);
    this.timer.unref();
  }

  /** The latest state; `reachable` turns false once no read has answered for READ_TIMEOUT_MS. */
  get current(): StoreState {
    const reachable = Date.now() - this.state.readAt <= READ_TIMEOUT_MS + READ_INTERVAL_MS;
    return { ...this.state, reachable: this.state.reachable && reachable };
  }

  /** Stops reading. Idempotent. */
  close(): void {
    clearInterval(this.timer);
  }

  private async read(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      const [info, backlog] = await withTimeout(
        Promise.all([
          this.redis.info('memory'),
          this.preQueue.getJobCountByTypes(...WAITING_STATES),
        ]),
        READ_TIMEOUT_MS,
        () => new Error(`Redis did not answer within ${READ_TIMEOUT_MS} ms`),
      );
      this.state = {
        reachable: true,
        usedMemory: infoField(info, 'used_memory'),
        maxMemory: infoField(info, 'maxmemory'),
        backlog,
        readAt: Date.now(),
      };
    } catch (err) {
      if (this.state.reachable) this.log.warn({ err }, 'Redis does not answer');
      this.state = { ...this.state, reachable: false };
    } finally {
      this.reading = false;
    }
  }
}

/** A numeric field of Redis's `INFO` text (`name:value` lines); 0 when absent. */
export function infoField(info: string, name: string): number {
  const match = new RegExp(`^${name}:(\\d+)`, 'm').exec(info);
  return match ? Number(match[1]) : 0;
}
