/**
 * Bounds on waits. Every wait on the request path (a Redis command, a download, a child
 * start) must end by the deadline it serves, whatever the other side does: a Redis that stops
 * answering without closing its connection would otherwise hold a request for as long as it
 * sleeps.
 */

/**
 * Settles like `work`, or rejects with `onTimeout()` once epoch-ms `deadline` has passed,
 * whichever comes first. `work` is not cancelled (a Redis command cannot be): its late result
 * or error is ignored.
 *
 * @param work the promise to bound
 * @param deadline epoch milliseconds (`Date.now()` clock)
 * @param onTimeout the error to reject with at the deadline
 */
export function withDeadline<T>(
  work: Promise<T>,
  deadline: number,
  onTimeout: () => Error,
): Promise<T> {
  const remaining = deadline - Date.now();
  if (remaining <= 0) {
    work.catch(() => {});
    return Promise.reject(onTimeout());
  }
  const { promise, resolve, reject } = Promise.withResolvers<T>();
  const timer = setTimeout(() => reject(onTimeout()), remaining);
  work.then(
    (value) => {
      clearTimeout(timer);
      resolve(value);
    },
    (err: unknown) => {
      clearTimeout(timer);
      reject(err);
    },
  );
  return promise;
}

/**
 * `withDeadline` with a duration: settles like `work` or rejects with `onTimeout()` after
 * `timeoutMs` milliseconds.
 */
export function withTimeout<T>(
  work: Promise<T>,
  timeoutMs: number,
  onTimeout: () => Error,
): Promise<T> {
  return withDeadline(work, Date.now() + timeoutMs, onTimeout);
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Seconds a per-image key outlives its request's deadline. */
export const DATA_TTL_MARGIN_S = 60;

/**
 * The TTL, seconds, of a per-image data key (an image, its pixels, its candidates) written now
 * for a request whose deadline is `deadline` (epoch ms): at least `minSeconds` (the
 * configuration's, for synchronous requests), and always past the deadline by
 * DATA_TTL_MARGIN_S, so an asynchronous image that waits long in a queue still finds its data.
 */
export function dataTtlSeconds(deadline: number, minSeconds: number): number {
  return Math.max(
    minSeconds,
    Math.ceil(Math.max(0, deadline - Date.now()) / 1000) + DATA_TTL_MARGIN_S,
  );
}
