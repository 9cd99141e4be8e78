import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { withTimeout } from '../../shared/deadline.js';
import type { Logger } from '../../shared/logger.js';
import { WAITING_STATES } from '../../shared/queues.js';

/** The states of WAITING_STATES that synchronous images wait in (all but `prioritized`). */
const SYNC_WAITING_STATES = WAITING_STATES.filter((s) => s !== 'prioritized');

/**
 * What admission needs to know about Redis, read in the background so no request waits for
 * it: whether Redis answers at all, how full its memory is, and the `pre` backlog. One read
 * (a few commands) every READ_INTERVAL_MS per gateway process, whatever the request rate; a read
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
  /**
   * Images of synchronous requests waiting in the `pre` queue: its `waiting` and `delayed` jobs
   * (the work ahead of a new synchronous image; asynchronous images, `prioritized`, wait behind
   * it and are counted by asyncBacklog).
   */
  backlog: number;
  /**
   * Images of asynchronous requests not yet started in their stage: the `prioritized` jobs of
   * every stage queue (only asynchronous images have a priority; ASYNC_PRIORITY).
   */
  asyncBacklog: number;
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
    asyncBacklog: 0,
    readAt: Date.now(),
  };
  private readonly timer: NodeJS.Timeout;
  private reading = false;

  /**
   * @param redis the gateway's command connection (a read queued behind a stuck command is
   *   exactly what a request would see)
   * @param preQueue the queue whose backlog admission limits
   * @param stageQueues every stage queue (`fetch`, `pre`, `infer`, `post`), for asyncBacklog
   */
  constructor(
    private readonly redis: Redis,
    private readonly preQueue: Queue,
    private readonly stageQueues: readonly Queue[],
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
      const [info, backlog, ...prioritized] = await withTimeout(
        Promise.all([
          this.redis.info('memory'),
          this.preQueue.getJobCountByTypes(...SYNC_WAITING_STATES),
          ...this.stageQueues.map((q) => q.getJobCountByTypes('prioritized')),
        ]),
        READ_TIMEOUT_MS,
        () => new Error(`Redis did not answer within ${READ_TIMEOUT_MS} ms`),
      );
      this.state = {
        reachable: true,
        usedMemory: infoField(info, 'used_memory'),
        maxMemory: infoField(info, 'maxmemory'),
        backlog,
        asyncBacklog: prioritized.reduce((a, b) => a + b, 0),
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
