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

/**
 * One read of the state in one round trip and one command, instead of `INFO memory` and one
 * BullMQ getCounts script per queue: `used_memory` and `maxmemory` from INFO; the backlog, the
 * `pre` queue's `wait` list and `delayed` set (what getCounts reads for `waiting` and
 * `delayed`, and what the autoscaler's ScaledObjects read); the asynchronous backlog, the
 * `prioritized` sets of the stage queues.
 *
 * KEYS: `pre`'s wait and delayed keys, then each stage queue's prioritized key.
 * Returns [used_memory, maxmemory, backlog, asyncBacklog].
 */
const READ_STATE_LUA = `
local info = redis.call('INFO', 'memory')
local prioritized = 0
for i = 3, #KEYS do prioritized = prioritized + redis.call('ZCARD', KEYS[i]) end
return {
  tonumber(string.match(info, '\\nused_memory:(%d+)')) or 0,
  tonumber(string.match(info, '\\nmaxmemory:(%d+)')) or 0,
  redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]),
  prioritized
}`;

/** The gateway connection with READ_STATE_LUA defined on it (ioredis defineCommand: EVALSHA). */
type StateReader = Redis & {
  readStoreState(numberOfKeys: number, ...keys: string[]): Promise<number[]>;
};

/** A BullMQ key of `queue` (`wait`, `delayed`, `prioritized` …), as BullMQ names it. */
function keyOf(queue: Queue, type: string): string {
  const key = queue.keys[type];
  if (key === undefined) throw new Error(`BullMQ names no '${type}' key`);
  return key;
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
  private readonly reader: StateReader;
  /** The keys READ_STATE_LUA reads (see there). */
  private readonly stateKeys: string[];

  /**
   * @param redis the gateway's command connection (a read queued behind a stuck command is
   *   exactly what a request would see)
   * @param preQueue the queue whose backlog admission limits
   * @param stageQueues every stage queue (`fetch`, `pre`, `infer`, `post`), for asyncBacklog
   */
  constructor(
    redis: Redis,
    preQueue: Queue,
    stageQueues: readonly Queue[],
    private readonly log: Logger,
  ) {
    // The number of keys is given at each call (the stage queues' count).
    redis.defineCommand('readStoreState', { lua: READ_STATE_LUA });
    this.reader = redis as StateReader;
    this.stateKeys = [
      keyOf(preQueue, 'wait'),
      keyOf(preQueue, 'delayed'),
      ...stageQueues.map((q) => keyOf(q, 'prioritized')),
    ];
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
      const [usedMemory = 0, maxMemory = 0, backlog = 0, asyncBacklog = 0] = await withTimeout(
        this.reader.readStoreState(this.stateKeys.length, ...this.stateKeys),
        READ_TIMEOUT_MS,
        () => new Error(`Redis did not answer within ${READ_TIMEOUT_MS} ms`),
      );
      this.state = {
        reachable: true,
        usedMemory,
        maxMemory,
        backlog,
        asyncBacklog,
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
