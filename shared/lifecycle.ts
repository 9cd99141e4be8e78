import type { Logger } from './logger.js';

/**
 * Process lifecycle: signal handlers are registered once; the first SIGINT/SIGTERM starts a
 * graceful shutdown, a second one (or the timeout, DRAIN_TIMEOUT_MS) forces the exit.
 */
export function handleShutdown(log: Logger, close: () => Promise<void>, timeoutMs: number): void {
  let shuttingDown = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (shuttingDown) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    shuttingDown = true;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      log.error({ timeoutMs }, 'shutdown timed out: exiting');
      process.exit(1);
    }, timeoutMs);
    force.unref();
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Under `npm start` each role runs in its own process group (so a terminal's Ctrl-C reaches
  // only the supervisor); if the supervisor dies without stopping it, the role stops itself.
  const supervisor = Number(process.env['SUPERVISOR_PID'] ?? 0);
  if (supervisor > 0) {
    setInterval(() => {
      if (process.ppid !== supervisor) onSignal('SIGTERM');
    }, 1000).unref();
  }
}

/** Runs each cleanup step in order, logging and continuing past failures. */
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

/** Exits with one clear line for errors at startup (bad config, missing model, ...). */
export function exitOnStartupError(log: Logger, err: unknown): never {
  const message = err instanceof Error ? err.message : String(err);
  log.fatal({ err }, `startup failed: ${message}`);
  process.stderr.write(`startup failed: ${message}\n`);
  process.exit(1);
}
