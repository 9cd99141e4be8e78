import type { StageMarks } from '../../shared/contracts.js';

/**
 * The `Server-Timing` header of a one-image response: how long the image waited in each queue
 * and spent in each stage, in milliseconds, from the marks the stages carried along
 * (`infer-queue` includes the wait for a batch to fill). Entries whose marks are missing are
 * left out.
 */
export function serverTiming(receivedAt: number, marks: StageMarks, finishedAt: number): string {
  const spans: Array<[string, number | undefined, number | undefined]> = [
    ['pre-queue', receivedAt, marks.preStart],
    ['pre', marks.preStart, marks.preEnd],
    ['infer-queue', marks.preEnd, marks.inferStart],
    ['infer', marks.inferStart, marks.inferEnd],
    ['post-queue', marks.inferEnd, marks.postStart],
    ['post', marks.postStart, marks.postEnd],
    ['total', receivedAt, finishedAt],
  ];
  return spans
    .filter((s): s is [string, number, number] => s[1] !== undefined && s[2] !== undefined)
    .map(([name, from, to]) => `${name};dur=${Math.max(0, to - from).toFixed(1)}`)
    .join(', ');
}
