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
    ...(pretty ? { transport: { target: 'pino-pretty', options: { colorize: true } } } : {}),
  });
}

function canResolve(name: string): boolean {
  try {
    import.meta.resolve(name);
    return true;
  } catch {
    return false;
  }
}
