import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createConnection, type Socket } from 'node:net';
import { round } from './proc-stats.js';

/**
 * Redis commands per image, counted as the issue counted them: `MONITOR` attached (in a phase
 * of its own, outside every timed window, since MONITOR slows Redis down) while `requests`
 * sequential requests run, minus the idle background measured just before.
 *
 * The phase: the requests once without MONITOR (warm-up, and their duration D), then MONITOR
 * on, an idle period of max(D, minIdleSeconds) (the background rate: heartbeats, stalled-job
 * checks, gauges), then the requests again; the load part lasts from the first request until
 * half a second after the last answer (hand-offs finishing after the answer). Background
 * commands are subtracted at the idle rate over the load part's length. MONITOR shows commands
 * sent by clients with the client's address and those run inside Lua scripts as `[0 lua]`.
 */

/** The counts of one MONITOR phase (per image: background removed). */
export interface RedisCommandCount {
  requests: number;
  idleSeconds: number;
  loadSeconds: number;
  /** Commands sent by clients per image (scripts count once), background removed. */
  sentPerImage: number;
  /** EVAL / EVALSHA / FCALL (and their _RO forms) per image, background removed. */
  scriptsPerImage: number;
  /** Commands run inside scripts per image, background removed. */
  inScriptsPerImage: number;
  /** At rest: commands sent by clients per second, and run inside scripts per second. */
  idleSentPerSecond: number;
  idleInScriptsPerSecond: number;
  /**
   * Per image, background removed, by command name (lower case; `lua:` for inside scripts;
   * `evalsha <script>` with BullMQ's script name).
   */
  perImageByCommand: Record<string, number>;
  /** Raw counts of each part, by command name. */
  idleByCommand: Record<string, number>;
  loadByCommand: Record<string, number>;
}

const SCRIPT_COMMANDS = new Set(['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro']);

/**
 * BullMQ's Lua scripts by the SHA1 of their text (what EVALSHA names them by, as ioredis's
 * `defineCommand` loads them), so the counts say which script ran. Scripts of another version
 * or of the project itself keep the first 8 hex digits of their SHA1.
 */
async function bullmqScriptNames(): Promise<Map<string, string>> {
  const names = new Map<string, string>();
  try {
    const scripts = (await import('bullmq/dist/esm/scripts/index.js')) as Record<
      string,
      { name?: unknown; content?: unknown }
    >;
    for (const s of Object.values(scripts))
      if (typeof s.name === 'string' && typeof s.content === 'string')
        names.set(createHash('sha1').update(s.content).digest('hex'), s.name);
  } catch {
    // Another layout of the package: SHA1s only.
  }
  return names;
}

/**
 * Runs the phase against a running pipeline.
 *
 * @param send sends one request and resolves when it is answered
 */
export async function countRedisCommands(
  redisUrl: string,
  send: () => Promise<void>,
  requests = 20,
  minIdleSeconds = 10,
): Promise<RedisCommandCount> {
  const sequential = async () => {
    for (let i = 0; i < requests; i++) await send();
  };
  const t0 = performance.now();
  await sequential();
  const warmSeconds = (performance.now() - t0) / 1000;

  const scriptNames = await bullmqScriptNames();
  let counts = new Map<string, number>();
  const feed = await openMonitor(redisUrl, (source, command, firstArg) => {
    let name = (source === 'lua' ? 'lua:' : '') + command.toLowerCase();
    if (name === 'evalsha' || name === 'evalsha_ro')
      name += ` ${scriptNames.get(firstArg ?? '') ?? (firstArg ?? '?').slice(0, 8)}`;
    counts.set(name, (counts.get(name) ?? 0) + 1);
  });
  try {
    // Let commands issued before MONITOR drain out of the count.
    await sleep(200);
    counts = new Map();
    const idleSeconds = Math.max(warmSeconds, minIdleSeconds);
    await sleep(idleSeconds * 1000);
    const idle = counts;
    counts = new Map();
    const l0 = performance.now();
    await sequential();
    await sleep(500);
    const loadSeconds = (performance.now() - l0) / 1000;
    const load = counts;
    feed.destroy();

    const names = new Set([...idle.keys(), ...load.keys()]);
    const perImageByCommand: Record<string, number> = {};
    for (const name of [...names].sort()) {
      const net = (load.get(name) ?? 0) - ((idle.get(name) ?? 0) * loadSeconds) / idleSeconds;
      perImageByCommand[name] = round(net / requests);
    }
    const sum = (m: Map<string, number>, keep: (name: string) => boolean) =>
      [...m].reduce((s, [k, v]) => (keep(k) ? s + v : s), 0);
    const isLua = (k: string) => k.startsWith('lua:');
    const isScript = (k: string) => SCRIPT_COMMANDS.has(k.split(' ')[0]!);
    const perImage = (keep: (name: string) => boolean) =>
      round((sum(load, keep) - (sum(idle, keep) * loadSeconds) / idleSeconds) / requests, 1);
    return {
      requests,
      idleSeconds: round(idleSeconds),
      loadSeconds: round(loadSeconds),
      sentPerImage: perImage((k) => !isLua(k)),
      scriptsPerImage: perImage(isScript),
      inScriptsPerImage: perImage(isLua),
      idleSentPerSecond: round(sum(idle, (k) => !isLua(k)) / idleSeconds, 1),
      idleInScriptsPerSecond: round(sum(idle, isLua) / idleSeconds, 1),
      perImageByCommand,
      idleByCommand: Object.fromEntries(idle),
      loadByCommand: Object.fromEntries(load),
    };
  } finally {
    feed.destroy();
  }
}

/**
 * A MONITOR feed on a plain socket: `onCommand(source, command, firstArgument)` for each line,
 * `source` being `lua` for commands run inside scripts. ioredis's monitor mode loses track of
 * its replies when the first monitored lines arrive in the same read as MONITOR's `+OK` (it
 * threw "Command queue state error" and ended the bench), so the lines are read here directly.
 */
async function openMonitor(
  redisUrl: string,
  onCommand: (source: string, command: string, firstArg: string | undefined) => void,
): Promise<Socket> {
  const url = new URL(redisUrl);
  const socket = createConnection({ host: url.hostname, port: Number(url.port || 6379) });
  await once(socket, 'connect');
  const password = url.password ? decodeURIComponent(url.password) : '';
  const user = url.username ? decodeURIComponent(url.username) : 'default';
  if (password) socket.write(`AUTH ${JSON.stringify(user)} ${JSON.stringify(password)}\r\n`);
  socket.write('MONITOR\r\n');
  let rest = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\r\n');
    rest = lines.pop() ?? '';
    for (const line of lines) {
      // +1700000000.123456 [0 127.0.0.1:5555] "evalsha" "<sha1>" ...; [0 lua] inside scripts.
      const m = /^\+\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]*)"(?: "([^"]*)")?/.exec(line);
      if (m) onCommand(m[1] === 'lua' ? 'lua' : 'client', m[2]!, m[3]);
    }
  });
  socket.on('error', () => {});
  return socket;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
