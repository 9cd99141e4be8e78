/**
 * `npm run soak [seconds] [clients]`: a mixed load against the stack as `npm start` runs it
 * (the supervisor, its private redis-server, every role its own process) while faults are
 * injected every 4 s, one at a time, at random:
 * - a `pre`, `post` or `infer` process killed with SIGKILL (the supervisor restarts it);
 * - the redis-server killed with SIGKILL (the supervisor restarts it, empty), at most every 15 s;
 * - the redis-server stopped (SIGSTOP) for 3 s, then continued.
 * Beside the load, two clients trickle request bodies (cut off by REQUEST_BODY_TIMEOUT_MS) and
 * one sends image URLs whose loopback host trickles (cut off by URL_FETCH_TIMEOUT_MS).
 *
 * Clients come back after `Retry-After` when told to. Prints requests sent and answered,
 * answers by status and code, answers later than their
 * deadline, and per-request Redis keys left behind. Exit code 1 when a request went without an
 * answer, an answer came late, or keys were left. Not part of `npm test`. Sends traffic only to
 * 127.0.0.1.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { freePort } from '../../services/supervisor/processes.js';
import { drawImage } from '../helpers/images.js';
import { keysOf } from '../helpers/stack.js';

const seconds = Number(process.argv[2] ?? 60);
const concurrency = Number(process.argv[3] ?? 8);
const faultEveryMs = 4000;
/** Each request's own deadline (timeout_ms); an answer later than this plus SLACK_MS is late. */
const TIMEOUT_MS = 5000;
const BODY_TIMEOUT_MS = 5000;
const SLACK_MS = 1500;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

// A loopback host for image URLs that never finishes sending.
const trickler = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'image/png', 'content-length': '100000' });
  const timer = setInterval(() => res.write('x'), 500);
  res.once('close', () => clearInterval(timer));
});
await new Promise<void>((r) => trickler.listen(0, '127.0.0.1', r));
const slowUrl = `http://127.0.0.1:${(trickler.address() as AddressInfo).port}/slow.png`;

const port = await freePort();
const env: NodeJS.ProcessEnv = {
  ...process.env,
  HOST: '127.0.0.1',
  PORT: String(port),
  LOG_LEVEL: 'warn',
  NUM_PRE_WORKERS: '2',
  NUM_POST_WORKERS: '2',
  METRICS_PORT: '0',
  DRAIN_TIMEOUT_MS: '5000',
  REQUEST_BODY_TIMEOUT_MS: String(BODY_TIMEOUT_MS),
  URL_FETCH_TIMEOUT_MS: '3000',
  ALLOW_PRIVATE_URLS: 'true',
};
delete env['REDIS_URL'];
const supervisor = spawn('npm', ['start', '--silent'], { cwd: ROOT, env, stdio: 'pipe' });
const lines: string[] = [];
const collect = (c: Buffer) => lines.push(...c.toString().split('\n').filter(Boolean));
supervisor.stdout.on('data', collect);
supervisor.stderr.on('data', collect);
const base = `http://127.0.0.1:${port}`;
for (let i = 0; !lines.some((l) => l.includes('is ready at')); i++) {
  if (i > 900 || supervisor.exitCode !== null) throw new Error(lines.slice(-20).join('\n'));
  await sleep(100);
}
/** The processes whose parent is `parent`, by what they are (a role, redis, the supervisor). */
function children(parent: number): Array<{ pid: number; what: string; cmd: string }> {
  const found: Array<{ pid: number; what: string; cmd: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== parent) continue;
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      const what =
        /services\/(\w+)\/main/.exec(cmd)?.[1] ?? (/redis-server/.test(cmd) ? 'redis' : '?');
      found.push({ pid: Number(entry), what, cmd });
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}
// npm runs the supervisor (its script execs node), which runs the roles and redis-server.
const supervisorPid = children(supervisor.pid!).find((c) => c.what === 'supervisor')!.pid;
const stackProcesses = () => children(supervisorPid);
const redisCmd = stackProcesses().find((c) => c.what === 'redis')!.cmd;
const redisUrl = `redis://127.0.0.1:${/(?:--port\0|:)(\d+)/.exec(redisCmd)![1]}`;

const good = (await drawImage(480, 360, [{ colour: 'red', x: 40, y: 60, w: 120, h: 90 }])).toString(
  'base64',
);
const bodies = [
  { image: { type: 'base64', value: good } },
  {
    image: [
      { type: 'base64', value: good },
      { type: 'base64', value: good },
    ],
  },
  { image: { type: 'base64', value: Buffer.from('not an image').toString('base64') } },
  { image: { type: 'base64', value: good }, confidence: 7 },
];

let sent = 0;
let answered = 0;
let failedToAnswer = 0;
let late = 0;
let slowest = 0;
const byOutcome = new Map<string, number>();
const count = (k: string) => byOutcome.set(k, (byOutcome.get(k) ?? 0) + 1);
const end = Date.now() + seconds * 1000;

async function post(body: unknown, limitMs: number): Promise<void> {
  sent++;
  const started = Date.now();
  let retryAfter = 0;
  try {
    const res = await fetch(`${base}/infer/object_detection`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const json = (await res.json()) as { code?: string };
    answered++;
    count(res.ok ? '200' : `${res.status} ${json.code ?? '?'}`);
    retryAfter = Number(res.headers.get('retry-after') ?? 0);
  } catch (err) {
    failedToAnswer++;
    count(`no answer: ${err instanceof Error ? err.message : String(err)}`);
    await sleep(50);
  }
  const ms = Date.now() - started;
  slowest = Math.max(slowest, ms);
  if (ms > limitMs + SLACK_MS) late++;
  // As a well-behaved client does: come back after Retry-After.
  if (retryAfter > 0) await sleep(retryAfter * 1000);
}

async function client(): Promise<void> {
  while (Date.now() < end) {
    const body = bodies[Math.floor(Math.random() * bodies.length)]!;
    await post({ ...body, timeout_ms: TIMEOUT_MS }, TIMEOUT_MS);
  }
}

async function slowUrlClient(): Promise<void> {
  while (Date.now() < end) {
    await post({ image: { type: 'url', value: slowUrl }, timeout_ms: TIMEOUT_MS }, TIMEOUT_MS);
  }
}

/** Sends headers, then trickles the body: answered 408 after REQUEST_BODY_TIMEOUT_MS. */
async function slowBodyClient(): Promise<void> {
  while (Date.now() < end) {
    sent++;
    const started = Date.now();
    const status = await new Promise<string>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      let text = '';
      socket.on('error', () => {});
      socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
      socket.write(
        'POST /infer/object_detection HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n' +
          'Content-Length: 100000\r\n\r\n',
      );
      const timer = setInterval(() => socket.write('x'), 200);
      socket.once('close', () => {
        clearInterval(timer);
        const code = /"code":"(\w+)"/.exec(text)?.[1];
        resolve(text ? `${text.split(' ')[1]} ${code ?? '?'}` : '');
      });
    });
    const ms = Date.now() - started;
    slowest = Math.max(slowest, ms);
    if (status === '') {
      failedToAnswer++;
      count('no answer: slow body closed without a response');
    } else {
      answered++;
      count(`${status} (slow body)`);
    }
    if (ms > BODY_TIMEOUT_MS + SLACK_MS) late++;
  }
}

const faults = new Map<string, number>();
let lastRedisKill = 0;
async function chaos(): Promise<void> {
  const kinds = ['kill pre', 'kill post', 'kill infer', 'kill redis', 'stop redis 3 s'] as const;
  while (Date.now() < end - faultEveryMs) {
    await sleep(faultEveryMs);
    let kind = kinds[Math.floor(Math.random() * kinds.length)]!;
    // More than MAX_CRASHES (5) deaths of one child in a minute stop the stack on purpose.
    if (kind === 'kill redis' && Date.now() - lastRedisKill < 15_000) kind = 'stop redis 3 s';
    if (kind === 'kill redis') lastRedisKill = Date.now();
    const target = kind.split(' ')[1]!;
    const live = stackProcesses().filter((c) => c.what === target);
    const victim = live[Math.floor(Math.random() * live.length)];
    if (!victim) continue;
    faults.set(kind, (faults.get(kind) ?? 0) + 1);
    process.stderr.write(`  ${kind} (pid ${victim.pid})\n`);
    if (kind === 'stop redis 3 s') {
      process.kill(victim.pid, 'SIGSTOP');
      await sleep(3000);
      process.kill(victim.pid, 'SIGCONT');
    } else {
      process.kill(victim.pid, 'SIGKILL');
    }
  }
}

const progress = setInterval(
  () => process.stderr.write(`  ${sent} sent, ${answered} answered\n`),
  5000,
);
process.stderr.write(
  `soak: ${seconds} s, ${concurrency} clients, 2 slow bodies, 1 slow URL, a fault every ${faultEveryMs / 1000} s\n`,
);
await Promise.all([
  ...Array.from({ length: concurrency }, client),
  slowBodyClient(),
  slowBodyClient(),
  slowUrlClient(),
  chaos(),
]);
clearInterval(progress);
// Let the last requests' cleanup reach Redis, then count what is left.
await sleep(2000);
if (supervisor.exitCode !== null) {
  console.log(`npm start exited (${supervisor.exitCode}):\n${lines.slice(-20).join('\n')}`);
  process.exit(1);
}
const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
redis.on('error', () => {});
const prefix = 'sd';
const leftover = (await keysOf(redis, prefix)).filter((k) => /:(img|px|cand):/.test(k));
redis.disconnect();
supervisor.kill('SIGTERM');
await new Promise((r) => supervisor.once('exit', r));
trickler.closeAllConnections();
trickler.close();

console.log(`requests sent:        ${sent}`);
console.log(`answered:             ${answered}`);
console.log(`without an answer:    ${failedToAnswer}`);
console.log(`answered late:        ${late} (slowest ${slowest} ms; deadlines ${TIMEOUT_MS} ms)`);
console.log(`faults injected:      ${[...faults].map(([k, v]) => `${k} ×${v}`).join(', ')}`);
for (const [k, v] of [...byOutcome].sort()) console.log(`  ${k.padEnd(36)} ${v}`);
console.log(`per-request Redis keys left: ${leftover.length}`);
process.exit(failedToAnswer === 0 && late === 0 && leftover.length === 0 ? 0 : 1);
