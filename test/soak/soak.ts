/**
 * `npm run soak [seconds] [concurrency]`: a mixed load against the whole stack (real Redis,
 * every role its own process) while worker processes are killed with SIGKILL at random and
 * replaced. Prints requests sent, answered, answers by status and error code, requests left
 * without an answer, and per-request Redis keys left behind. Not part of `npm test`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Role } from '../../services/supervisor/processes.js';
import { drawImage } from '../helpers/images.js';
import { keysOf, startRedis, startStack } from '../helpers/stack.js';

const seconds = Number(process.argv[2] ?? 60);
const concurrency = Number(process.argv[3] ?? 8);
const killEveryMs = 4000;

const redis = await startRedis();
const stack = await startStack({
  redisUrl: redis.url,
  env: { LOG_LEVEL: 'warn', MAX_BATCH_DELAY_MS: '5' },
  roles: ['infer', 'pre', 'pre', 'post', 'post', 'gateway'],
});

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
const byOutcome = new Map<string, number>();
const count = (k: string) => byOutcome.set(k, (byOutcome.get(k) ?? 0) + 1);
const end = Date.now() + seconds * 1000;

async function client(): Promise<void> {
  while (Date.now() < end) {
    const body = bodies[Math.floor(Math.random() * bodies.length)]!;
    sent++;
    try {
      const res = await fetch(`${stack.url}/infer/object_detection`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      const json = (await res.json()) as { code?: string };
      answered++;
      count(res.ok ? '200' : `${res.status} ${json.code ?? '?'}`);
    } catch (err) {
      failedToAnswer++;
      count(`no answer: ${err instanceof Error ? err.message : String(err)}`);
      await sleep(50);
    }
  }
}

let kills = 0;
async function chaos(): Promise<void> {
  const victims: Role[] = ['pre', 'post', 'infer'];
  while (Date.now() < end - killEveryMs) {
    await sleep(killEveryMs);
    const role = victims[Math.floor(Math.random() * victims.length)]!;
    const live = stack.roles.filter(
      (r) => r.role === role && r.process.exitCode === null && r.process.signalCode === null,
    );
    const victim = live[Math.floor(Math.random() * live.length)];
    if (!victim) continue;
    victim.process.kill('SIGKILL');
    stack.add(role);
    kills++;
    process.stderr.write(`  killed ${role} (pid ${victim.process.pid}), started a new one\n`);
  }
}

const progress = setInterval(
  () => process.stderr.write(`  ${sent} sent, ${answered} answered\n`),
  5000,
);
process.stderr.write(
  `soak: ${seconds} s, ${concurrency} clients, a worker killed every ${killEveryMs / 1000} s\n`,
);
await Promise.all([...Array.from({ length: concurrency }, client), chaos()]);
clearInterval(progress);
await sleep(1000);
const gateway = stack.roles.find((r) => r.role === 'gateway');
if (gateway && (gateway.process.exitCode !== null || gateway.process.signalCode !== null)) {
  console.log(`the gateway exited (${gateway.process.exitCode ?? gateway.process.signalCode}):`);
  console.log(gateway.output.slice(-20).join('\n'));
}
const leftover = (await keysOf(redis.client, stack.prefix)).filter((k) =>
  /:(img|px|cand|reply):/.test(k),
);
await stack.stop();
await redis.stop();

console.log(`requests sent:      ${sent}`);
console.log(`answered:           ${answered}`);
console.log(`without an answer:  ${failedToAnswer}`);
console.log(`processes killed:   ${kills}`);
for (const [k, v] of [...byOutcome].sort()) console.log(`  ${k.padEnd(32)} ${v}`);
console.log(`per-request Redis keys left: ${leftover.length}`);
process.exit(failedToAnswer === 0 && leftover.length === 0 ? 0 : 1);
