import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { withTimeout } from '../../shared/deadline.js';
import type { Logger } from '../../shared/logger.js';

/**
 * What admission needs to know about Redis, read in the background so no request waits for
 * it: whether Redis answers at all, how full its memory is, and the `pre` backlog. One read
 * (one command, READ_STATE_LUA) every READ_INTERVAL_MS per gateway process, whatever the
 * request rate; a read that takes longer than READ_TIMEOUT_MS counts as no answer. Redis that
 * stopped answering (paused, stopped, gone) is seen within about READ_TIMEOUT_MS +
 * READ_INTERVAL_MS.
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

/**
 * One read of the state in one round trip and one command, instead of `INFO memory` and BullMQ's
 * getCounts script: `used_memory` and `maxmemory` from INFO, and the backlog, counted in the
 * keys of WAITING_STATES (the list `wait`, the sorted sets `prioritized` and `delayed`: what
 * getCounts reads for them, and what the autoscaler's ScaledObjects read).
 *
 * KEYS: the queue's wait, prioritized and delayed keys. Returns [used_memory, maxmemory, backlog].
 */
const READ_STATE_LUA = `
local info = redis.call('INFO', 'memory')
return {
  tonumber(string.match(info, '\\nused_memory:(%d+)')) or 0,
  tonumber(string.match(info, '\\nmaxmemory:(%d+)')) or 0,
  redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
}`;

/** The gateway connection with READ_STATE_LUA defined on it (ioredis defineCommand: EVALSHA). */
type StateReader = Redis & {
  readStoreState(wait: string, prioritized: string, delayed: string): Promise<number[]>;
};

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
  private readonly reader: StateReader;
  /** The `pre` queue's keys READ_STATE_LUA counts. */
  private readonly backlogKeys: [string, string, string];

  /**
   * @param redis the gateway's command connection (a read queued behind a stuck command is
   *   exactly what a request would see)
   * @param preQueue the queue whose backlog admission limits
   */
  constructor(
    redis: Redis,
    preQueue: Queue,
    private readonly log: Logger,
  ) {
    redis.defineCommand('readStoreState', { numberOfKeys: 3, lua: READ_STATE_LUA });
    this.reader = redis as StateReader;
    const key = (state: string) => {
      const k = preQueue.keys[state];
      if (k === undefined) throw new Error(`BullMQ names no '${state}' key`);
      return k;
    };
    this.backlogKeys = [key('wait'), key('prioritized'), key('delayed')];
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
      const [usedMemory = 0, maxMemory = 0, backlog = 0] = await withTimeout(
        this.reader.readStoreState(...this.backlogKeys),
        READ_TIMEOUT_MS,
        () => new Error(`Redis did not answer within ${READ_TIMEOUT_MS} ms`),
      );
      this.state = { reachable: true, usedMemory, maxMemory, backlog, readAt: Date.now() };
    } catch (err) {
      if (this.state.reachable) this.log.warn({ err }, 'Redis does not answer');
      this.state = { ...this.state, reachable: false };
    } finally {
      this.reading = false;
    }
  }
}
