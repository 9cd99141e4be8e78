import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { Logger } from './logger.js';

/**
 * One process under supervision: a role or the private redis-server of `npm start`, or a
 * gateway process of the gateway's cluster primary. An exit nobody asked for is a crash: the process is
 * started again after a backoff that doubles with each recent crash (0.5 s, 1 s, 2 s … 10 s).
 * A process that crashes more than MAX_CRASHES times within CRASH_WINDOW_MS is given up on,
 * so a broken setup stops with a clear error instead of restarting forever.
 */
export const MAX_CRASHES = 5;
export const CRASH_WINDOW_MS = 60_000;

export interface SupervisedOptions {
  /** Name in logs and errors, e.g. `pre#2` or `redis`. */
  name: string;
  /** Starts the process (again), with stderr piped when onStderrLine is given. */
  spawn: () => ChildProcess;
  /** A process already started by `spawn`, to supervise instead of starting one. */
  started?: ChildProcess;
  log: Logger;
  /**
   * First restart delay, doubled with each recent crash up to 20×.
   * @defaultValue 500
   */
  backoffMs?: number;
  /** Called once when the process keeps crashing. */
  onGiveUp: (name: string, crashes: number) => void;
  /** Sees each line the process writes to stderr; the line is passed through unless it returns true. */
  onStderrLine?: (line: string) => boolean;
}

/** One supervised process (see above): restarted with backoff, given up on when it keeps crashing. */
export class Supervised {
  readonly name: string;
  private child: ChildProcess;
  private crashes: number[] = [];
  private restartTimer: NodeJS.Timeout | undefined;
  private stopping: Promise<void> | undefined;

  constructor(private readonly opts: SupervisedOptions) {
    this.name = opts.name;
    this.child = this.watch(opts.started ?? opts.spawn());
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Resolves when the current process exits (immediately if it already has). */
  exited(): Promise<number | null> {
    const c = this.child;
    if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve(c.exitCode);
    return new Promise((resolve) => c.once('exit', (code) => resolve(code)));
  }

  /** Stops the process (SIGTERM, SIGKILL after timeoutMs) and any pending restart. Idempotent. */
  stop(timeoutMs: number): Promise<void> {
    this.stopping ??= (async () => {
      if (this.restartTimer) clearTimeout(this.restartTimer);
      await stopProcess(this.child, timeoutMs);
    })();
    return this.stopping;
  }

  kill(): void {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.stopping ??= Promise.resolve();
    this.child.kill('SIGKILL');
  }

  private watch(child: ChildProcess): ChildProcess {
    let partial = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (!this.opts.onStderrLine?.(line)) process.stderr.write(`${line}\n`);
      }
    });
    // A failed spawn also ends in 'exit'; without a listener its 'error' would end this process.
    child.on('error', (err) => this.opts.log.warn({ err, process: this.name }, 'spawn failed'));
    child.once('exit', (code, signal) => this.onExit(code, signal));
    return child;
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.stopping) return;
    const now = Date.now();
    this.crashes = [...this.crashes.filter((t) => now - t < CRASH_WINDOW_MS), now];
    if (this.crashes.length > MAX_CRASHES) {
      this.opts.onGiveUp(this.name, this.crashes.length);
      return;
    }
    const base = this.opts.backoffMs ?? 500;
    const delay = Math.min(base * 2 ** (this.crashes.length - 1), base * 20);
    this.opts.log.warn(
      { process: this.name, code, signal, restartInMs: delay },
      `${this.name} exited; restarting`,
    );
    this.restartTimer = setTimeout(() => {
      this.child = this.watch(this.opts.spawn());
      this.opts.log.info(
        { process: this.name, childPid: this.child.pid },
        `${this.name} restarted`,
      );
    }, delay);
  }
}

/**
 * Sends SIGTERM and waits for the exit; SIGKILL after `timeoutMs`.
 * @defaultValue timeoutMs 10000
 */
export async function stopProcess(child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}
