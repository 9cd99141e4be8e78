/**
 * How many pixels `post` draws at once. Drawing holds the decoded image, the rendered overlay
 * and the encoder's buffers (about 10 bytes a pixel): 50 drawings of 16-megapixel photos at once
 * would take gigabytes. Drawings wait here, first come first served, until their pixels fit in
 * the budget; one image larger than the whole budget is drawn alone.
 */
export class PixelBudget {
  private inUse = 0;
  private readonly queue: Array<{ pixels: number; start: () => void }> = [];

  /** @param limit pixels (width × height) drawn at once */
  constructor(private readonly limit: number) {}

  /**
   * Runs `work` once `pixels` fit in the budget beside the drawings already running.
   *
   * @param pixels width × height of the image `work` draws
   */
  async run<T>(pixels: number, work: () => Promise<T>): Promise<T> {
    const need = Math.min(pixels, this.limit);
    if (this.queue.length > 0 || this.inUse + need > this.limit) {
      await new Promise<void>((start) => this.queue.push({ pixels: need, start }));
    } else {
      this.inUse += need;
    }
    try {
      return await work();
    } finally {
      this.inUse -= need;
      this.next();
    }
  }

  private next(): void {
    for (;;) {
      const head = this.queue[0];
      if (!head || this.inUse + head.pixels > this.limit) return;
      this.queue.shift();
      this.inUse += head.pixels;
      head.start();
    }
  }
}
