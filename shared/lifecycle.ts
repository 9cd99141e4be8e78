import type { Logger } from './logger.js';

/**
 * The process lifecycle, one module for every process of the stack (the roles, the gateway's
 * cluster primary, the supervisor), after graphile-worker's: signal handlers are installed once,
 * when the process starts (a SIGTERM during a two-minute model load is handled too); the first
 * SIGINT/SIGTERM starts the graceful stop the process registered (`onStop`), forced after the
 * drain timeout; a second signal forces at once; and the process ends by re-raising the signal
 * it got, so its parent sees it ended by that signal.
 *
 * A stop can also come from inside (`stop`): the process that started this one is gone, or a
 * child keeps crashing. Such a stop ends with the exit code given.
 */
export interface Lifecycle {
  /**
   * What a graceful stop does, set once the process has something to drain. Before it is set, a
   * signal ends the process at once (nothing was accepted yet).
   */
  onStop(close: () => Promise<void>): void;
  /** Starts the graceful stop from inside, to end with `exitCode`. Idempotent. */
  stop(reason: string, exitCode: number): void;
  /** Whether a stop has started. */
  readonly stopping: boolean;
}

export interface LifecycleOptions {
  /** How long the graceful stop may take before the process is forced to end (DRAIN_TIMEOUT_MS). */
  timeoutMs: number;
  /**
   * Stop when this process's parent is no longer `parentPid` (it died and this process was
   * re-parented): a process nobody can stop any more stops itself. Checked every 500 ms.
   * @defaultValue not watched
   */
  parentPid?: number;
  /**
   * A repeat of the first signal within this time is the same request, not a second one: a
   * terminal's Ctrl-C reaches npm, which passes it on, and npm's child, in the same group.
   * @defaultValue 1000
   */
  repeatWindowMs?: number;
  /** Called just before a forced end (second signal, timeout): kill what must not outlive it. */
  onForce?: () => void;
}

const SIGNALS = ['SIGINT', 'SIGTERM'] as const;
/** Longest wait for the log's flush before a process re-raises its signal, ms. */
const FLUSH_WAIT_MS = 500;

/**
 * Installs the lifecycle of this process: call it first thing in an entry point.
 *
 * @param log where the stop's steps are logged
 */
export function installLifecycle(log: Logger, opts: LifecycleOptions): Lifecycle {
  let close: (() => Promise<void>) | undefined;
  let stopping: Promise<void> | undefined;
  let firstSignalAt = 0;
  const repeatWindowMs = opts.repeatWindowMs ?? 1000;

  /**
   * Ends the process: by re-raising `signal` (handlers removed first), or with `code`. A log
   * that writes in the background (pino's pretty transport, on a terminal) flushes what is
   * pending on 'exit', which a process ended by a signal never emits: the log is flushed first,
   * so the stop's own lines are not lost (the JSON log writes synchronously; shared/logger.ts).
   * A flush that has not called back within FLUSH_WAIT_MS does not hold the stop.
   */
  const end = (signal: NodeJS.Signals | undefined, code: number): void => {
    if (!signal) process.exit(code);
    for (const s of SIGNALS) process.removeAllListeners(s);
    const raise = () => process.kill(process.pid, signal);
    setTimeout(raise, FLUSH_WAIT_MS);
    try {
      log.flush(raise);
    } catch {
      raise();
    }
  };
  /** Ends the process now, after the caller's last words (`onForce`). */
  const force = (why: string, details: Record<string, unknown>): void => {
    log.error(details, why);
    opts.onForce?.();
    process.exit(1);
  };

  const begin = (reason: string, signal: NodeJS.Signals | undefined, exitCode: number) => {
    if (stopping) return;
    if (!close) {
      log.info({ signal, reason }, 'stopping during startup');
      end(signal, exitCode);
      return;
    }
    log.info({ signal, reason }, 'shutting down');
    setTimeout(
      () => force('shutdown timed out: exiting', { timeoutMs: opts.timeoutMs }),
      opts.timeoutMs,
    ).unref();
    const graceful = close;
    stopping = graceful().then(
      () => end(signal, exitCode),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };

  for (const signal of SIGNALS) {
    process.on(signal, () => {
      if (firstSignalAt === 0) {
        firstSignalAt = Date.now();
        begin('signal', signal, 0);
        return;
      }
      if (Date.now() - firstSignalAt < repeatWindowMs) return;
      force('second signal: exiting now', { signal });
    });
  }

  if (opts.parentPid !== undefined) {
    const parentPid = opts.parentPid;
    setInterval(() => {
      if (process.ppid !== parentPid) begin(`parent process ${parentPid} is gone`, undefined, 0);
    }, 500).unref();
  }

  return {
    onStop(fn) {
      close = once(fn);
    },
    stop(reason, exitCode) {
      begin(reason, undefined, exitCode);
    },
    get stopping() {
      return stopping !== undefined;
    },
  };
}

/**
 * Runs each cleanup step in order, logging and continuing past failures.
 *
 * @param steps `[name, step]` pairs; a step's rejection is logged with its name
 */
export async function closeInOrder(
  log: Logger,
  steps: Array<[string, () => Promise<unknown>]>,
): Promise<void> {
  for (const [name, step] of steps) {
    try {
      log.debug({ step: name }, 'cleanup step');
      await step();
    } catch (err) {
      log.warn({ err, step: name }, 'cleanup step failed');
    }
  }
}

/** Memoises an async close so calling it twice is safe and waits for the same work. */
export function once(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => (p ??= fn());
}

/**
 * Exits with one clear line on stderr for errors at startup (bad config, missing model, ...);
 * the supervisor shows that line as the reason the stack did not start.
 */
export function exitOnStartupError(log: Logger, err: unknown): never {
  const message = err instanceof Error ? err.message : String(err);
  log.fatal({ err }, `startup failed: ${message}`);
  process.stderr.write(`startup failed: ${message}\n`);
  process.exit(1);
}

/** The supervisor's pid when this process runs under `npm start` (SUPERVISOR_PID), else undefined. */
export function supervisorPid(): number | undefined {
  const pid = Number(process.env['SUPERVISOR_PID'] ?? 0);
  return pid > 0 ? pid : undefined;
}
