import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * One pino logger per process, tagged with its role. JSON lines by default; pretty output when
 * stdout is a terminal and pino-pretty (a dev dependency) is installed.
 *
 * The JSON lines are written synchronously. pino's default destination writes in the
 * background and flushes what is pending on 'exit', which a process ended by a signal (as
 * every role ends: shared/lifecycle.ts re-raises it) never emits: the last lines, those of the
 * stop itself, were lost about one stop in two. A line costs a few microseconds more.
 */
export function createLogger(role: string, level: string): Logger {
  const pretty = process.stdout.isTTY && canResolve('pino-pretty');
  const options = { level, base: { role, pid: process.pid }, serializers: { err: serializeError } };
  if (pretty)
    return pino({ ...options, transport: { target: 'pino-pretty', options: { colorize: true } } });
  return pino(options, pino.destination({ dest: 1, sync: true }));
}

/**
 * pino's error serializer, minus what can carry secrets: ioredis attaches the failed command
 * (an AUTH's arguments are the Redis password) to its errors and to their previous errors.
 */
function serializeError(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const out = pino.stdSerializers.err(err) as unknown as Record<string, unknown>;
  delete out['command'];
  delete out['previousErrors'];
  return out;
}

function canResolve(name: string): boolean {
  try {
    import.meta.resolve(name);
    return true;
  } catch {
    return false;
  }
}
