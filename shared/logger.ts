import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * One pino logger per process, tagged with its role. JSON lines by default; pretty output when
 * stdout is a terminal and pino-pretty (a dev dependency) is installed.
 */
export function createLogger(role: string, level: string): Logger {
  const pretty = process.stdout.isTTY && canResolve('pino-pretty');
  return pino({
    level,
    base: { role, pid: process.pid },
    serializers: { err: serializeError },
    ...(pretty ? { transport: { target: 'pino-pretty', options: { colorize: true } } } : {}),
  });
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
