/**
 * Dynamic batching for the one process that owns the model.
 *
 * State machine. Items arrive one by one (one per BullMQ job); the model runs one batch at a
 * time.
 *   - idle: nothing waits. The first arrival starts the delay timer (maxDelayMs) and moves to
 *     collecting.
 *   - collecting: items wait. The batch is dispatched when maxBatchSize items wait or when the
 *     timer fires, whichever comes first.
 *   - running: a batch is on the model. Arrivals keep collecting; if the timer fires or the
 *     batch fills meanwhile, the next batch is marked due and is dispatched the moment the
 *     running one finishes, so the model never idles while a full or overdue batch waits.
 * After a dispatch, items left over (more than maxBatchSize were waiting) start a new timer
 * measured from the oldest leftover's arrival, so no item waits longer than maxDelayMs plus
 * the runs ahead of it.
 *
 * Items whose deadline has passed are dropped at dispatch time: expired images never reach
 * the model.
 */
export interface BatcherOptions<I, O> {
  maxBatchSize: number;
  maxDelayMs: number;
  /** Runs one batch; must return one output per item, in order. */
  run: (items: I[]) => Promise<O[]>;
  /** Epoch ms after which an item is not worth running. */
  deadlineOf: (item: I) => number;
  /** Error for an item dropped because its deadline passed. */
  expiredError: (item: I) => Error;
}

interface Waiting<I, O> {
  item: I;
  arrivedAt: number;
  resolve: (o: O) => void;
  reject: (e: unknown) => void;
}

export class Batcher<I, O> {
  private queue: Waiting<I, O>[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private due = false;
  private closed = false;

  constructor(private readonly opts: BatcherOptions<I, O>) {}

  /** Resolves with the item's output once the batch that holds it has run. */
  submit(item: I): Promise<O> {
    if (this.closed) return Promise.reject(new Error('the batcher is closed'));
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, arrivedAt: Date.now(), resolve, reject });
      if (this.queue.length >= this.opts.maxBatchSize) this.markDue();
      else if (this.queue.length === 1) this.armTimer(this.opts.maxDelayMs);
    });
  }

  /** Images waiting for a batch. */
  get waiting(): number {
    return this.queue.length;
  }

  /** Stops taking items; waiting items are rejected, a running batch finishes. */
  close(): void {
    this.closed = true;
    this.clearTimer();
    for (const w of this.queue.splice(0)) w.reject(new Error('the batcher is closed'));
  }

  private armTimer(delayMs: number): void {
    this.clearTimer();
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.markDue();
      },
      Math.max(0, delayMs),
    );
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private markDue(): void {
    this.due = true;
    if (!this.running) this.dispatch();
  }

  private dispatch(): void {
    this.due = false;
    this.clearTimer();
    const now = Date.now();
    const batch: Waiting<I, O>[] = [];
    while (batch.length < this.opts.maxBatchSize && this.queue.length > 0) {
      const w = this.queue.shift()!;
      if (this.opts.deadlineOf(w.item) < now) w.reject(this.opts.expiredError(w.item));
      else batch.push(w);
    }
    if (this.queue.length > 0) {
      if (this.queue.length >= this.opts.maxBatchSize) this.due = true;
      else this.armTimer(this.queue[0]!.arrivedAt + this.opts.maxDelayMs - now);
    }
    if (batch.length === 0) {
      if (this.due) this.dispatch();
      return;
    }
    this.running = true;
    let outputs: Promise<O[]>;
    try {
      outputs = this.opts.run(batch.map((w) => w.item));
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
        this.running = false;
        if (this.due && !this.closed) this.dispatch();
      });
  }
}
