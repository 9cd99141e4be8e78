/**
 * Dynamic batching for the one process that owns the models, with one lane per model and
 * `slots` run slots shared by all lanes (batches on the hardware at once: one per model
 * instance, services/infer/model.ts).
 *
 * State machine of a lane. Items arrive one by one (one per BullMQ job).
 *   - idle: nothing waits. An arrival that finds a run slot free (an instance idle) makes the
 *     lane due at once: waiting for companions would only add the delay to its latency, and
 *     the images that arrive while it runs form the next batch. An arrival while every slot
 *     runs a batch starts the lane's delay timer (maxDelayMs) and moves the lane to collecting.
 *   - collecting: items wait. The lane becomes due when it holds a full batch (its model's
 *     batch limit) or when the timer fires, whichever comes first.
 *   - due: the lane waits for the run slot. Arrivals keep joining it, up to a full batch.
 * After a dispatch, items left over (more than a batch was waiting) start a new timer measured
 * from the oldest leftover's arrival, or keep the lane due if a full batch is left.
 *
 * Choosing between due lanes when a run slot frees (the fairness rule): the lane holding the
 * oldest waiting image runs next, unless its batch is not full and another due lane holds a
 * full batch; then the full batch runs first, but a lane can be passed over this way at most
 * `maxSkips` times in a row (default 1). So an image of a quiet model, once its lane is due,
 * waits for at most `maxSkips + 1` batches of busier models: a busy model cannot starve a
 * quiet one, and full batches (the cheapest images) still go first under load.
 *
 * Items whose deadline has passed are dropped at dispatch time: expired images never reach
 * the model.
 *
 * Within a lane, items of a more urgent class (`priorityOf`: synchronous requests' images
 * before asynchronous ones) join the queue ahead of less urgent ones, in arrival order within
 * a class, and a batch holds items of one class only: an urgent image that arrives while a long
 * background list waits goes into the next batch, with the other urgent images only, so it
 * waits for the batch already running but does not pay for a batch filled with background
 * images (on a CPU a batch costs about its size times one image).
 *
 * Pacing (`backgroundPacing`): class 0 is urgent, every other class background. While urgent
 * items keep arriving, a background batch that ran for d ms is followed by `factor` × d ms in
 * which no background batch starts (urgent ones start at once): background lanes stay due, and
 * the first of them is dispatched when the pause ends, and it holds at most `maxBatch` images:
 * an urgent image that arrives while a background batch runs waits for a batch of that size,
 * not for a full one (on a CPU a batch of 8 costs about 8 single runs). Meanwhile at most one
 * background batch runs at a time, whatever the slots. Without urgent arrivals background
 * batches are full and run back to back, in every slot.
 */
export interface SchedulerOptions<I, O> {
  maxDelayMs: number;
  /** The lane (model) of an item. */
  laneOf: (item: I) => string;
  /** Largest batch of a lane. */
  maxBatchOf: (lane: string) => number;
  /** Runs one batch of one lane; must return one output per item, in order. */
  run: (lane: string, items: I[]) => Promise<O[]>;
  /** Epoch ms after which an item is not worth running. */
  deadlineOf: (item: I) => number;
  /** Error for an item dropped because its deadline passed. */
  expiredError: (item: I) => Error;
  /** How many times in a row a lane may be passed over for another lane's full batch. */
  maxSkips?: number;
  /**
   * Batches that run at the same time (the model instances).
   *
   * @defaultValue 1
   */
  slots?: number;
  /**
   * An item's urgency class: lower goes first within its lane (see above).
   *
   * @defaultValue every item 0 (arrival order)
   */
  priorityOf?: (item: I) => number;
  /**
   * Pauses between background batches while urgent items arrive (see Pacing above). A batch's
   * cost does not end with its run: each background image goes on to cost work in other
   * processes (Redis, the next stage) on cores an urgent image needs too. Back-to-back
   * background batches keep those cores saturated, and an urgent image waits for them in
   * every stage, not only for the batch ahead of it in the model.
   *
   * @defaultValue no pauses
   */
  backgroundPacing?: BackgroundPacing;
}

/** How background batches are paced while urgent items arrive. */
export interface BackgroundPacing {
  /** The pause after a background batch, as a multiple of its run time. */
  factor: number;
  /** An urgent item that arrived within this many ms makes the pause apply. */
  activeMs: number;
  /** The largest background batch while the pause applies (lanes' own limits otherwise). */
  maxBatch: number;
}

interface Waiting<I, O> {
  item: I;
  arrivedAt: number;
  /** Arrival order across lanes (clock ticks are too coarse to order arrivals). */
  seq: number;
  /** Urgency class (priorityOf). */
  priority: number;
  resolve: (o: O) => void;
  reject: (e: unknown) => void;
}

interface Lane<I, O> {
  id: string;
  queue: Waiting<I, O>[];
  timer: NodeJS.Timeout | undefined;
  due: boolean;
  skips: number;
}

/** The dynamic batching scheduler described above: one lane per model, `slots` runs at a time. */
export class BatchScheduler<I, O> {
  private readonly lanes = new Map<string, Lane<I, O>>();
  /** Batches running now, and how many of them are background batches. */
  private running = 0;
  private runningBackground = 0;
  private closed = false;
  private arrivals = 0;
  /** Epoch ms of the last urgent (class 0) arrival. */
  private lastUrgentAt = -Infinity;
  /** Epoch ms before which no background batch starts while urgent items arrive. */
  private backgroundPausedUntil = 0;
  /** Dispatches the background lanes held back by the pause, when it ends. */
  private pauseTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: SchedulerOptions<I, O>) {}

  /** Whether a run slot is free. */
  private get slotFree(): boolean {
    return this.running < (this.opts.slots ?? 1);
  }

  /** Resolves with the item's output once the batch that holds it has run. */
  submit(item: I): Promise<O> {
    if (this.closed) return Promise.reject(new Error('the batcher is closed'));
    const lane = this.lane(this.opts.laneOf(item));
    return new Promise<O>((resolve, reject) => {
      const priority = this.opts.priorityOf?.(item) ?? 0;
      if (priority === 0) this.lastUrgentAt = Date.now();
      const waiting = {
        item,
        arrivedAt: Date.now(),
        seq: this.arrivals++,
        priority,
        resolve,
        reject,
      };
      // Behind every item of its class or a more urgent one, ahead of the less urgent ones.
      const at = lane.queue.findIndex((w) => w.priority > priority);
      if (at < 0) lane.queue.push(waiting);
      else lane.queue.splice(at, 0, waiting);
      if (lane.queue.length >= this.opts.maxBatchOf(lane.id) || this.slotFree) this.markDue(lane);
      else if (lane.queue.length === 1) this.armTimer(lane, this.opts.maxDelayMs);
    });
  }

  /** Images waiting for a batch, in every lane. */
  get waiting(): number {
    let n = 0;
    for (const lane of this.lanes.values()) n += lane.queue.length;
    return n;
  }

  /** Stops taking items; waiting items are rejected, a running batch finishes. Idempotent. */
  close(): void {
    this.closed = true;
    if (this.pauseTimer) clearTimeout(this.pauseTimer);
    for (const lane of this.lanes.values()) {
      this.clearTimer(lane);
      for (const w of lane.queue.splice(0)) w.reject(new Error('the batcher is closed'));
    }
  }

  private lane(id: string): Lane<I, O> {
    let lane = this.lanes.get(id);
    if (!lane) {
      lane = { id, queue: [], timer: undefined, due: false, skips: 0 };
      this.lanes.set(id, lane);
    }
    return lane;
  }

  private armTimer(lane: Lane<I, O>, delayMs: number): void {
    this.clearTimer(lane);
    lane.timer = setTimeout(
      () => {
        lane.timer = undefined;
        this.markDue(lane);
      },
      Math.max(0, delayMs),
    );
  }

  private clearTimer(lane: Lane<I, O>): void {
    if (lane.timer) clearTimeout(lane.timer);
    lane.timer = undefined;
  }

  private markDue(lane: Lane<I, O>): void {
    lane.due = true;
    if (this.slotFree) this.dispatchNext();
  }

  /** Whether urgent items are arriving at `now`: one came within the pacing's `activeMs`. */
  private urgentActive(now: number): boolean {
    const pacing = this.opts.backgroundPacing;
    return pacing !== undefined && now - this.lastUrgentAt < pacing.activeMs;
  }

  /**
   * Whether background batches are held back at `now` (Pacing above); when they are, arms the
   * timer that dispatches them once the pause ends.
   */
  private backgroundPaused(now: number): boolean {
    const urgentActive = this.urgentActive(now);
    const paused = urgentActive && now < this.backgroundPausedUntil;
    if (paused && !this.pauseTimer) {
      this.pauseTimer = setTimeout(() => {
        this.pauseTimer = undefined;
        if (this.slotFree) this.dispatchNext();
      }, this.backgroundPausedUntil - now);
    }
    // One background batch at a time while urgent items arrive; its end dispatches the next.
    return paused || (urgentActive && this.runningBackground > 0);
  }

  /** The due lane that runs next, by the fairness rule above and the pacing. */
  private choose(): Lane<I, O> | undefined {
    let oldest: Lane<I, O> | undefined;
    let fullest: Lane<I, O> | undefined;
    const paused = this.backgroundPaused(Date.now());
    for (const lane of this.lanes.values()) {
      if (!lane.due || lane.queue.length === 0) continue;
      // Stays due: dispatched when the pause ends.
      if (paused && lane.queue[0]!.priority !== 0) continue;
      if (!oldest || lane.queue[0]!.seq < oldest.queue[0]!.seq) oldest = lane;
      const full = lane.queue.length >= this.opts.maxBatchOf(lane.id);
      if (full && (!fullest || lane.queue.length > fullest.queue.length)) fullest = lane;
    }
    if (!oldest) return undefined;
    const oldestFull = oldest.queue.length >= this.opts.maxBatchOf(oldest.id);
    if (fullest && fullest !== oldest && !oldestFull && oldest.skips < (this.opts.maxSkips ?? 1)) {
      oldest.skips++;
      return fullest;
    }
    return oldest;
  }

  private dispatchNext(): void {
    if (this.closed) return;
    const lane = this.choose();
    if (!lane) return;
    lane.due = false;
    lane.skips = 0;
    this.clearTimer(lane);
    const now = Date.now();
    const batch: Waiting<I, O>[] = [];
    // One class per batch (the queue is ordered by class): an urgent image runs with the urgent
    // images waiting, not in a batch filled up with background ones.
    const priority = lane.queue[0]?.priority;
    const laneMax = this.opts.maxBatchOf(lane.id);
    const pacing = this.opts.backgroundPacing;
    const maxBatch =
      priority !== 0 && pacing && this.urgentActive(now)
        ? Math.min(laneMax, pacing.maxBatch)
        : laneMax;
    while (
      batch.length < maxBatch &&
      lane.queue.length > 0 &&
      lane.queue[0]!.priority === priority
    ) {
      const w = lane.queue.shift()!;
      if (this.opts.deadlineOf(w.item) < now) w.reject(this.opts.expiredError(w.item));
      else batch.push(w);
    }
    if (lane.queue.length > 0) {
      if (lane.queue.length >= laneMax) lane.due = true;
      else this.armTimer(lane, lane.queue[0]!.arrivedAt + this.opts.maxDelayMs - now);
    }
    if (batch.length === 0) return this.dispatchNext();
    this.running++;
    if (priority !== 0) this.runningBackground++;
    let outputs: Promise<O[]>;
    try {
      outputs = this.opts.run(
        lane.id,
        batch.map((w) => w.item),
      );
    } catch (err) {
      // A run that throws instead of rejecting must still settle its items.
      outputs = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    outputs
      .then(
        (outputs) => {
          batch.forEach((w, i) => {
            if (i < outputs.length) w.resolve(outputs[i]!);
            else
              w.reject(
                new Error(`the batch returned ${outputs.length} outputs for ${batch.length} items`),
              );
          });
        },
        (err: unknown) => batch.forEach((w) => w.reject(err)),
      )
      .finally(() => {
        if (priority !== 0 && this.opts.backgroundPacing) {
          const end = Date.now();
          this.backgroundPausedUntil = end + (end - now) * this.opts.backgroundPacing.factor;
        }
        this.running--;
        if (priority !== 0) this.runningBackground--;
        this.dispatchNext();
      });
    // Another slot may be free for another due lane.
    if (this.slotFree) this.dispatchNext();
  }
}
