import { setFlagsFromString } from 'node:v8';

/**
 * Garbage collection settings of the roles that move images through Redis (gateway, `pre`,
 * `infer`, `post`).
 *
 * Each image crosses these processes as Buffers of hundreds of kilobytes (its bytes, its
 * pixels), which V8 counts as external memory. By default V8 starts a full (mark-compact)
 * collection whenever external memory has grown by a fixed amount since the last one, whatever
 * the size of the JavaScript heap: with ioredis reading and writing those values (its socket
 * chunks and the joined value each count), that was one full collection every 5 to 10 images
 * in `pre` and `infer` and every 10 to 20 in the gateway, each 10 to 35 ms with these
 * processes' heaps (measured over 150 sequential bus.jpg requests: 27, 21 and 7 of them).
 * With external memory counted in V8's global heap limit instead, the heap's own growth
 * heuristics decide, and the same requests needed 5, 5 and 3 (bench/README.md has the A/B
 * run).
 */
export function tuneGarbageCollection(): void {
  // A V8 flag read whenever the heap recomputes its limits, so it applies from here on.
  setFlagsFromString('--external-memory-accounted-in-global-limit');
}
