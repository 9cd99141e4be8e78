import type { Redis } from 'ioredis';
import { z } from 'zod';
import {
  ResultMessageSchema,
  type DetectionResponse,
  type StageMarks,
} from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { parseJson } from '../../shared/validation.js';

/**
 * Waits for results on this gateway instance's reply list (see shared/reply.ts). One loop pops
 * the list with a blocking BLMPOP on a dedicated connection and settles the matching request;
 * every wait also has a timer that ends it with DEADLINE_EXCEEDED at the request's deadline, so
 * no request waits forever whatever happens downstream.
 */
/** A finished image: its response and the stage marks it collected on the way. */
export interface ImageResult {
  response: DetectionResponse;
  marks: StageMarks;
}

interface PendingWait {
  resolve: (r: ImageResult) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  /** Epoch ms when the wait was registered. */
  since: number;
}

const DRAIN_BATCH = 256;

/**
 * The gateway's side of the reply list: `wait(id, deadline)` for each image before it is
 * enqueued, a loop that pops results and settles the waits, a timer per wait for its deadline.
 */
export class ResultWaiter {
  private readonly pending = new Map<string, PendingWait>();
  private running: Promise<void> | undefined;
  private closed = false;
  /**
   * Settles when close() is called: a BLMPOP queued on a connection to a Redis that is gone
   * never settles, so the loop races its commands with this.
   */
  private readonly stopped: Promise<null>;
  private stop: () => void = () => {};

  constructor(
    private readonly connection: Redis,
    private readonly listKey: string,
    private readonly log: Logger,
  ) {
    this.stopped = new Promise((resolve) => {
      this.stop = () => resolve(null);
    });
  }

  /** Starts popping the reply list. */
  start(): void {
    this.running ??= this.loop();
  }

  /** Registers a wait; call before the job is enqueued so a fast result cannot be missed. */
  wait(id: string, deadline: number): Promise<ImageResult> {
    return new Promise<ImageResult>((resolve, reject) => {
      const timer = setTimeout(
        () => {
          this.pending.delete(id);
          reject(
            new PipelineError(
              ErrorCode.DEADLINE_EXCEEDED,
              'no result arrived before the request deadline',
            ),
          );
        },
        Math.max(0, deadline - Date.now()),
      );
      this.pending.set(id, { resolve, reject, timer, since: Date.now() });
    });
  }

  /**
   * Ends at once, with a retryable NOT_READY, the waits registered before `before` (epoch ms)
   * whose work Redis no longer holds: after Redis restarted empty their jobs are gone and no
   * result can come. `holds` tells, for a list of inference ids, which still have work in Redis.
   *
   * @returns how many waits were ended
   */
  /**
   * Ends every pending wait registered before `before` (epoch ms) with `error`.
   *
   * @returns the inference ids of the waits ended
   */
  failAll(before: number, error: () => PipelineError): string[] {
    const ended: string[] = [];
    for (const [id, w] of this.pending) {
      if (w.since >= before) continue;
      clearTimeout(w.timer);
      this.pending.delete(id);
      w.reject(error());
      ended.push(id);
    }
    return ended;
  }

  async failLost(before: number, holds: (ids: string[]) => Promise<boolean[]>): Promise<number> {
    const ids = [...this.pending].filter(([, w]) => w.since < before).map(([id]) => id);
    if (ids.length === 0) return 0;
    const present = await holds(ids);
    let ended = 0;
    ids.forEach((id, i) => {
      const w = this.pending.get(id);
      if (!w || present[i]) return;
      clearTimeout(w.timer);
      this.pending.delete(id);
      w.reject(
        new PipelineError(
          ErrorCode.NOT_READY,
          'Redis restarted and lost the work of this request; send it again',
        ),
      );
      ended++;
    });
    return ended;
  }

  /** Forgets a wait whose result nobody needs any more. */
  cancel(id: string): void {
    const w = this.pending.get(id);
    if (!w) return;
    clearTimeout(w.timer);
    this.pending.delete(id);
  }

  /** Stops the loop; waits still pending are rejected. Idempotent. */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.stop();
      this.connection.disconnect();
      for (const [id, w] of this.pending) {
        clearTimeout(w.timer);
        w.reject(new PipelineError(ErrorCode.NOT_READY, 'the gateway is shutting down'));
        this.pending.delete(id);
      }
    }
    await this.running;
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      try {
        // One command per wake-up: BLMPOP (Redis 7) blocks like BRPOP but takes up to
        // DRAIN_BATCH messages at once, so a burst costs no further round trip per message and
        // a lone result no draining RPOP that finds nothing.
        const popped = await Promise.race([
          this.connection.blmpop(1, 1, this.listKey, 'RIGHT', 'COUNT', DRAIN_BATCH),
          this.stopped,
        ]);
        for (const raw of popped?.[1] ?? []) this.settle(raw);
      } catch (err) {
        if (this.closed) break;
        this.log.warn({ err }, 'reading results failed; retrying');
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /**
   * Settles the wait a result message is for. The message is parsed with ResultMessageSchema:
   * one of another shape is logged, and when its id is still readable its request is answered
   * with INTERNAL rather than with whatever the message holds.
   */
  private settle(raw: string): void {
    const parsed = parseJson(ResultMessageSchema, raw);
    if (!parsed.ok) {
      const id = idOf(raw);
      this.log.error(
        { inference_id: id, problems: parsed.problems, raw: raw.slice(0, 500) },
        'malformed result message',
      );
      if (id !== undefined)
        this.end(id, (w) =>
          w.reject(
            new PipelineError(
              ErrorCode.INTERNAL,
              `the result of this image was malformed: ${parsed.problems.join('; ')}`,
            ),
          ),
        );
      return;
    }
    const msg = parsed.value;
    this.end(msg.id, (w) => {
      if (msg.ok) w.resolve({ response: msg.response, marks: msg.marks });
      else w.reject(new PipelineError(msg.error.code, msg.error.message));
    });
  }

  /** Removes the wait for `id` and settles it with `how`; nothing when already answered. */
  private end(id: string, how: (w: PendingWait) => void): void {
    const w = this.pending.get(id);
    if (!w) return; // Already answered (deadline) or cancelled.
    clearTimeout(w.timer);
    this.pending.delete(id);
    how(w);
  }
}

/** The `id` of a message that failed its schema, when it still has a readable one. */
function idOf(raw: string): string | undefined {
  const parsed = parseJson(MessageId, raw);
  return parsed.ok ? parsed.value.id : undefined;
}

const MessageId = z.object({ id: z.string().min(1) });
