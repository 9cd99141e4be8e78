import { ErrorCode, PipelineError } from '../../shared/errors.js';
import type { StoreState } from './store-monitor.js';

/**
 * Admission control, decided before a request's body is read so that refusing costs nothing
 * and memory stays bounded whatever the request rate. A request is refused when
 * - this gateway process already holds `maxInflight` requests (429 OVERLOADED);
 * - Redis does not answer (503 NOT_READY): work accepted now could not be stored;
 * - Redis's memory would pass `memoryHighWater` × `maxmemory` with this request's body
 *   (503 STORE_FULL): refusing new work early keeps the room for work already accepted;
 * - for a synchronous request, the `pre` backlog of synchronous images is at `maxQueueDepth`
 *   or more (429 OVERLOADED);
 * - for an asynchronous request, the unstarted asynchronous images (every stage queue) are at
 *   `maxAsyncBacklog` or more, or would pass it with the request's own images once they are
 *   known (429 OVERLOADED). Asynchronous images wait behind synchronous ones and do not count
 *   against `maxQueueDepth`, so a large asynchronous list cannot get interactive users refused.
 * The Redis figures come from the StoreMonitor's background reads.
 */
export interface AdmissionLimits {
  maxInflight: number;
  maxQueueDepth: number;
  /** Fraction of Redis's `maxmemory` above which new requests are refused (0–1). */
  memoryHighWater: number;
  /** ASYNC_MAX_BACKLOG. */
  maxAsyncBacklog: number;
}

/** The admission decision of one gateway process (see the module comment above). */
export class Admission {
  private inflight = 0;
  /** Body bytes admitted since the store was last read, not yet in its used memory. */
  private admittedBytes = 0;
  private lastReadAt = 0;
  /** Asynchronous images accepted since the store was last read, not yet in its counts. */
  private admittedAsyncImages = 0;

  constructor(
    private readonly limits: AdmissionLimits,
    private readonly store: () => StoreState,
  ) {}

  /** Requests admitted and not yet released. */
  get held(): number {
    return this.inflight;
  }

  /**
   * Takes a slot for a request whose body is `bodyBytes` long (its Content-Length; 0 when
   * unknown), or throws.
   *
   * @param kind `async` for the asynchronous route (its backlog is checked instead of the
   *   `pre` backlog) @defaultValue `sync`
   * @returns the release, safe to call more than once
   * @throws PipelineError OVERLOADED, NOT_READY or STORE_FULL (see the class comment)
   */
  admit(bodyBytes: number, kind: 'sync' | 'async' = 'sync'): () => void {
    const { maxInflight, maxQueueDepth, memoryHighWater } = this.limits;
    if (this.inflight >= maxInflight) {
      throw new PipelineError(
        ErrorCode.OVERLOADED,
        `the gateway is at its limit of ${maxInflight} requests in flight; retry later`,
      );
    }
    const state = this.fresh();
    if (!state.reachable) {
      throw new PipelineError(ErrorCode.NOT_READY, 'Redis does not answer; retry later');
    }
    const needed = state.usedMemory + this.admittedBytes + bodyBytes;
    if (state.maxMemory > 0 && needed > memoryHighWater * state.maxMemory) {
      throw new PipelineError(
        ErrorCode.STORE_FULL,
        `Redis is near its memory limit (${mib(state.usedMemory)} of ${mib(state.maxMemory)} used); retry later`,
      );
    }
    if (kind === 'async') this.checkAsyncBacklog(state.asyncBacklog, 0);
    else if (state.backlog >= maxQueueDepth) {
      throw new PipelineError(
        ErrorCode.OVERLOADED,
        `${state.backlog} images are already waiting to be processed; retry later`,
      );
    }
    this.inflight++;
    this.admittedBytes += bodyBytes;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.inflight--;
    };
  }

  /**
   * Admits the `images` of an asynchronous request, once its body is read: the backlog with
   * them must stay within `maxAsyncBacklog`.
   *
   * @throws PipelineError OVERLOADED
   */
  admitAsyncImages(images: number): void {
    this.checkAsyncBacklog(this.fresh().asyncBacklog, images);
    this.admittedAsyncImages += images;
  }

  /** The store's state; what was admitted since its previous read is reset with a new read. */
  private fresh(): StoreState {
    const state = this.store();
    if (state.readAt !== this.lastReadAt) {
      this.lastReadAt = state.readAt;
      this.admittedBytes = 0;
      this.admittedAsyncImages = 0;
    }
    return state;
  }

  private checkAsyncBacklog(backlog: number, images: number): void {
    const { maxAsyncBacklog } = this.limits;
    const waiting = backlog + this.admittedAsyncImages;
    if (waiting + Math.max(images, 1) > maxAsyncBacklog) {
      throw new PipelineError(
        ErrorCode.OVERLOADED,
        `${waiting} asynchronous images are already waiting (at most ${maxAsyncBacklog}${images > 0 ? `, this request adds ${images}` : ''}); retry later`,
      );
    }
  }
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
