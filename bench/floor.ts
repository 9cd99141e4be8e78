import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect, type NetConnectOpts, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { QueueName } from '../shared/contracts.js';
import { EnvSchema } from '../shared/config.js';
import { createQueue, stageWorkerOptions } from '../shared/queues.js';
import { createRedis, redisSocketUrl, redisTarget } from '../shared/redis.js';
import { tuneGarbageCollection } from '../shared/gc-tuning.js';
import { startRedisServer } from '../services/supervisor/processes.js';
import type { LimitResult } from './limit.js';
import type { LoadStep } from './load.js';
import { measureSystem, perImage, runScript } from './measure.js';
import { round } from './proc-stats.js';
import type { SystemUnderTest } from './systems.js';
import { jsonBodies, loadImages } from './workloads.js';

/**
 * `npm run bench:floor`: what the staged design's hand-offs cost per image on this machine when
 * the stages do no work, with three ways of making them; and the orchestration ceiling
 * (pipeline / in-process limit with the null model) a pipeline would reach if it added only that
 * to the limit's work.
 *
 * Five real processes, as `npm start` runs them: a private redis-server reached over a Unix
 * socket, and four stand-ins for the roles that do none of their work and none of BullMQ's
 * bookkeeping (no retries, locks, stalled-job checks, deadlines, metrics or logs):
 *  - gateway: node:http (not fastify) reads the JSON body and decodes its base64 image, then
 *    `LPUSH`es the id and the image as one list element; a result list read with `BLMPOP`
 *    answers the request;
 *  - pre, infer, post: each `BLMOVE`s an element onto a processing list of its own (what a
 *    hand-off that survives a killed worker needs), then pushes the next element and empties the
 *    processing list in one write (listLoop): `pre` sends 640×480 RGB pixels (the size the null
 *    workload's letterbox sends on), `infer` a 16-byte candidate list, `post` a Roboflow-shaped
 *    empty response to the gateway's result list.
 * The transports (`--queues`, default all three):
 *  - `lists`: the stages talk to Redis through ioredis, as the pipeline's roles do;
 *  - `raw`: the same commands through a minimal client (RawClient) that neither copies a value
 *    into a command buffer nor allocates per read: what the hand-offs cost without a client
 *    library's allocations;
 *  - `bullmq`: the ids travel as BullMQ jobs with the pipeline's queue and worker options
 *    (shared/queues.ts), each value under a key of its own (`SET` with the next job's add,
 *    `GET`, `DEL`), as the pipeline stores them: what the pipeline's transport costs.
 * autocannon sends the null workload's bodies (the COCO128 JPEGs at 160 px, bench/workloads.ts)
 * at each concurrency; the in-process limit of the same workload (limit.ts) runs after them.
 *
 * The ceiling printed per transport is limit / (limit + hand-offs) in CPU per image: a pipeline
 * doing the limit's work plus these hand-offs on the same cores. It is an estimate, not a bound:
 * the limit keeps fewer than all cores busy (about 1.87 of 2 here), which a pipeline may not,
 * and the load generator (printed) takes CPU from the pipeline only.
 *
 * Usage: tsx bench/floor.ts [--duration s] [--warmup s] [--concurrency 8,32] [--loops n]
 *   [--queues lists,raw,bullmq]
 * Progress on stderr; the tables on stdout.
 */
const HELP = `usage: npm run bench:floor -- [options]
  --duration <s>        seconds measured per load step (default 10)
  --warmup <s>          least seconds of unmeasured load before each step (default 3)
  --concurrency <list>  client connections per step (default 8,32, as the bench's null workload)
  --loops <n>           hand-off loops per stand-in process, each with its own connection (default 4)
  --queues <list>       lists (ioredis), raw (a minimal client), bullmq (the pipeline's queues)
                        (default lists,raw,bullmq)
  --help`;

/** Queue lists and keys of the stand-ins, under one prefix. */
const P = 'floor';
const STAGES = ['pre', 'infer', 'post'] as const;
type Stage = (typeof STAGES)[number];
const NEXT: Record<Stage, string> = { pre: 'infer', infer: 'post', post: 'result' };
/** Length of an id (a UUID) at the head of a list element (listLoop). */
const ID_BYTES = 36;
/** What `pre` sends on: 640×480 RGB, the letterbox of the null workload's 4:3 images. */
const PIXELS = Buffer.alloc(640 * 480 * 3, 7);
/** What `infer` sends on: a candidate list (the null model finds nothing). */
const CANDIDATES = Buffer.alloc(16);
const RESPONSE = JSON.stringify({
  time: 0,
  image: { width: 160, height: 120 },
  predictions: [],
  inference_id: '00000000-0000-0000-0000-000000000000',
});

const { values } = parseArgs({
  options: {
    role: { type: 'string' },
    redis: { type: 'string' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '8,32' },
    loops: { type: 'string', default: '4' },
    queues: { type: 'string', default: 'lists,raw,bullmq' },
    help: { type: 'boolean', default: false },
  },
});

type Transport = 'lists' | 'raw' | 'bullmq';

function transportOf(text: string): Transport {
  if (text !== 'lists' && text !== 'raw' && text !== 'bullmq') {
    throw new Error(`--queues: unknown '${text}'`);
  }
  return text;
}

/** One measured step: requests/s, CPU ms per image by process. */
interface FloorStep {
  transport: Transport;
  load: LoadStep;
  cpuMsPerImage: Record<string, number>;
  totalCpuMsPerImage: number;
  loadGeneratorCpuMsPerImage: number;
}

async function main(): Promise<void> {
  const seconds = Number(values.duration);
  const warmupSeconds = Number(values.warmup);
  const levels = values.concurrency.split(',').map(Number);
  const transports = values.queues.split(',').map(transportOf);
  const bodies = jsonBodies(await loadImages('null'), 0.25);
  const steps: FloorStep[] = [];
  for (const transport of transports) {
    steps.push(...(await measureFloor(transport, bodies, levels, seconds, warmupSeconds)));
  }
  process.stderr.write(' in-process limit\n');
  const limit = await runScript<LimitResult>('limit.ts', [
    'null',
    String(seconds),
    levels.join(','),
    '8',
    String(warmupSeconds),
  ]);
  console.log(report(steps, limit));
}

/** The stand-ins with one transport, on a redis-server of their own, at each concurrency. */
async function measureFloor(
  transport: Transport,
  bodies: Buffer[],
  levels: number[],
  seconds: number,
  warmupSeconds: number,
): Promise<FloorStep[]> {
  const socketDir = mkdtempSync(join(tmpdir(), 'sd-floor-'));
  const redisServer = await startRedisServer('ignore', undefined, undefined, join(socketDir, 's'));
  const url = redisSocketUrl(join(socketDir, 's'));
  const children: ChildProcess[] = [];
  const steps: FloorStep[] = [];
  try {
    const procs = new Map<string, number>([['redis', redisServer.process.pid!]]);
    for (const role of [...STAGES, 'gateway']) {
      const child = spawnRole(role, url, values.loops, transport);
      children.push(child);
      procs.set(role, child.pid!);
    }
    const gateway = children.at(-1)!;
    const port = await new Promise<number>((resolve, reject) => {
      gateway.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      gateway.once('exit', (code) => reject(new Error(`the gateway stand-in exited (${code})`)));
    });
    const sut: SystemUnderTest = {
      url: `http://127.0.0.1:${port}`,
      processes: procs,
      metricsUrls: [],
      redis: undefined,
      redisUrl: undefined,
      stop: () => Promise.resolve(),
    };
    const measured = await measureSystem(`floor ${transport}`, sut, bodies, levels, {
      warmupSeconds,
      durationSeconds: seconds,
    });
    for (const step of measured.steps) {
      const ms = (cores: number): number => {
        const v = perImage(cores, step.imagesPerSecond, 3);
        if (v === null) throw new Error(`floor ${transport} c=${step.connections}: no answer`);
        return v;
      };
      steps.push({
        transport,
        load: step,
        cpuMsPerImage: Object.fromEntries(
          Object.entries(step.cpuCoresByProcess).map(([k, cores]) => [k, ms(cores)]),
        ),
        totalCpuMsPerImage: ms(step.cpuCores),
        loadGeneratorCpuMsPerImage: ms(step.loadGeneratorCpuCores),
      });
    }
  } finally {
    for (const c of children) c.kill('SIGTERM');
    redisServer.process.kill('SIGTERM');
    rmSync(socketDir, { recursive: true, force: true });
  }
  return steps;
}

/** The floor's steps, the limit, and the bounds they put on the ceiling, as text. */
function report(steps: FloorStep[], limit: LimitResult): string {
  const out: string[] = [
    'orchestration floor: gateway, pre, infer and post stand-ins that do no work, Redis on a Unix socket,',
    'the null workload’s bodies (COCO128 at 160 px); CPU ms per image by process',
  ];
  for (const s of steps) {
    const parts = Object.entries(s.cpuMsPerImage).map(([k, v]) => `${k} ${v}`);
    out.push(
      `  ${s.transport} c=${s.load.connections}: ${s.load.requestsPerSecond} requests/s, p50 ${s.load.latencyMs.p50} ms, ` +
        `${s.totalCpuMsPerImage} CPU ms/img (${parts.join(', ')}); load generator ${s.loadGeneratorCpuMsPerImage}` +
        (s.load.non2xx + s.load.errors > 0
          ? `; ${s.load.non2xx} non-2xx, ${s.load.errors} errors`
          : ''),
    );
  }
  out.push('in-process limit of the null workload (limit.ts)');
  for (const l of limit.levels) {
    out.push(
      `  ${l.inflight} in flight: ${l.imagesPerSecond} images/s, ${perImage(l.cpuCores, l.imagesPerSecond, 3)} CPU ms/img`,
    );
  }
  const best = limit.levels.reduce((a, b) => (b.imagesPerSecond > a.imagesPerSecond ? b : a));
  const limitCpu = perImage(best.cpuCores, best.imagesPerSecond, 3) ?? Infinity;
  out.push(
    `the orchestration ceiling with only these hand-offs added to the limit's work (target ≥ 0.9: at most ${round(limitCpu / 9, 3)} CPU ms/img)`,
  );
  for (const transport of new Set(steps.map((s) => s.transport))) {
    const mine = steps.filter((s) => s.transport === transport);
    const floorCpu = Math.min(...mine.map((s) => s.totalCpuMsPerImage));
    out.push(
      `  ${transport}: limit ${round(limitCpu, 3)} / (limit + ${floorCpu}) = ${round(limitCpu / (limitCpu + floorCpu), 3)}`,
    );
  }
  return out.join('\n');
}

/** Starts this file as the stand-in for `role` (runRole). */
function spawnRole(role: string, url: string, loops: string, transport: Transport): ChildProcess {
  return spawn(
    process.execPath,
    [
      '--import',
      import.meta.resolve('tsx'),
      fileURLToPath(import.meta.url),
      ...['--role', role, '--redis', url, '--loops', loops, '--queues', transport],
    ],
    { stdio: ['ignore', role === 'gateway' ? 'pipe' : 'ignore', 'inherit'] },
  );
}

/** A stand-in process: `role` is `gateway` or a stage; `url` the REDIS_URL. */
function runRole(role: string, url: string, loops: number, transport: Transport): void {
  process.on('SIGTERM', () => process.exit(0));
  // The garbage collection settings of the pipeline's roles, which move the same Buffers.
  tuneGarbageCollection();
  if (role === 'gateway') return gatewayRole(url, transport);
  const stage = role as Stage;
  if (transport === 'bullmq') return bullmqStage(url, stage, loops);
  for (let i = 0; i < loops; i++) {
    if (transport === 'raw') void RawClient.connect(url).then((c) => listLoop(c, stage, i));
    else void listLoop(ioredisLists(createRedis(url, `${stage}-${i}`, 'worker')), stage, i);
  }
}

/** The job data of the BullMQ stand-ins: a small part of what a pipeline job carries. */
function jobData(id: string) {
  return { id, replyTo: 'gateway-1', deadline: Date.now() + 30_000, confidence: 0.25 };
}

/**
 * One loop of a stage stand-in on lists. An element is the image's id followed by its value, so
 * one `BLMOVE` both takes the hand-off and delivers the data, onto a processing list of this
 * loop's own (what a restarted worker would recover); one pipeline then pushes the next element
 * and empties the processing list. Redis copies each value in and out once per hop.
 */
async function listLoop(redis: ListClient, stage: Stage, loop: number): Promise<void> {
  const queue = `${P}:${stage}`;
  const active = `${queue}:active:${loop}`;
  // This loop's outgoing element: the id is written into its head, the body made once.
  const out = Buffer.alloc(ID_BYTES + (stage === 'pre' ? PIXELS.length : CANDIDATES.length));
  for (;;) {
    const element = await redis.take(queue, active);
    if (element === null) continue;
    if (stage === 'post') {
      await redis.pushAndClear(
        `${P}:result`,
        `${element.subarray(0, ID_BYTES).toString()} ${RESPONSE}`,
        active,
      );
    } else {
      element.copy(out, 0, 0, ID_BYTES);
      await redis.pushAndClear(`${P}:${NEXT[stage]}`, out, active);
    }
  }
}

/** The two round trips of listLoop, on either client. */
interface ListClient {
  /** `BLMOVE queue active RIGHT LEFT 0`: the element, valid until the next call. */
  take(queue: string, active: string): Promise<Buffer | null>;
  /** `LPUSH list element` and `DEL active` in one write. */
  pushAndClear(list: string, element: Buffer | string, active: string): Promise<void>;
}

/** ListClient on ioredis, as the pipeline's roles talk to Redis. */
function ioredisLists(redis: Redis): ListClient {
  return {
    take: (queue, active) => redis.blmoveBuffer(queue, active, 'RIGHT', 'LEFT', 0),
    pushAndClear: async (list, element, active) => {
      await redis.pipeline().lpush(list, element).del(active).exec();
    },
  };
}

/**
 * ListClient on a minimal RESP2 client over the Unix socket (`--queues raw`): each argument is
 * written as it is (no copy into a command buffer), the socket is read into one reused buffer
 * (`onread`), and a bulk reply is copied once into a reused buffer. It shows what the same
 * hand-offs cost without a client library's allocations; it knows only the replies listLoop
 * gets (status, integer, bulk string) and is no client for anything else.
 */
class RawClient implements ListClient {
  private readonly waiting: Array<(reply: Buffer | null) => void> = [];
  private readonly line = Buffer.alloc(1024);
  private lineLength = 0;
  private readonly bulk = Buffer.allocUnsafe(4 * 1024 * 1024);
  private bulkLength = 0;
  /** Bytes of the current bulk reply (and its CRLF) still to read. */
  private want = 0;
  private got = 0;

  private socket!: Socket;

  static async connect(url: string): Promise<RawClient> {
    const client = new RawClient();
    client.socket = connect({
      path: redisTarget(url),
      onread: {
        buffer: Buffer.allocUnsafe(256 * 1024),
        callback: (n: number, buf: Uint8Array) => {
          client.read(buf, n);
          return true;
        },
      },
    } as NetConnectOpts);
    await new Promise((resolve) => client.socket.once('connect', resolve));
    return client;
  }

  async take(queue: string, active: string): Promise<Buffer | null> {
    return this.send([['BLMOVE', queue, active, 'RIGHT', 'LEFT', '0']]).then((r) => r[0]!);
  }

  async pushAndClear(list: string, element: Buffer | string, active: string): Promise<void> {
    await this.send([
      ['LPUSH', list, element],
      ['DEL', active],
    ]);
  }

  /** Writes the commands in one corked write; resolves with their replies (bulk or null). */
  private send(commands: Array<Array<string | Buffer>>): Promise<Array<Buffer | null>> {
    const replies = commands.map(
      () => new Promise<Buffer | null>((resolve) => this.waiting.push(resolve)),
    );
    this.socket.cork();
    for (const parts of commands) {
      this.socket.write(`*${parts.length}\r\n`);
      for (const part of parts) {
        this.socket.write(`$${Buffer.byteLength(part)}\r\n`);
        this.socket.write(part);
        this.socket.write('\r\n');
      }
    }
    this.socket.uncork();
    return Promise.all(replies);
  }

  private read(buf: Uint8Array, n: number): void {
    let i = 0;
    while (i < n) {
      if (this.want > 0) {
        const k = Math.min(this.want, n - i);
        this.bulk.set(buf.subarray(i, i + k), this.got);
        this.got += k;
        this.want -= k;
        i += k;
        if (this.want === 0) this.waiting.shift()!(this.bulk.subarray(0, this.bulkLength));
        continue;
      }
      const byte = buf[i++]!;
      this.line[this.lineLength++] = byte;
      if (byte !== 10) continue;
      const text = this.line.toString('latin1', 0, this.lineLength - 2);
      this.lineLength = 0;
      if (text[0] !== '$') {
        this.waiting.shift()!(null);
        continue;
      }
      this.bulkLength = Number(text.slice(1));
      if (this.bulkLength < 0) {
        this.waiting.shift()!(null);
      } else {
        this.got = 0;
        this.want = this.bulkLength + 2;
      }
    }
  }
}

/** A stage stand-in on BullMQ: the pipeline's queue and worker options, `loops` at once. */
function bullmqStage(url: string, stage: Stage, loops: number): void {
  const client = createRedis(url, `${stage}-client`, 'worker');
  const next = stage === 'post' ? undefined : createQueue(NEXT[stage] as QueueName, client, P);
  new Worker<{ id: string }>(
    stage,
    async (job) => {
      const id = job.data.id;
      const key = `${P}:data:${stage}:${id}`;
      await client.getBuffer(key);
      if (next) {
        const value = stage === 'pre' ? PIXELS : CANDIDATES;
        await Promise.all([
          client.set(`${P}:data:${NEXT[stage]}:${id}`, value),
          next.add(NEXT[stage] as never, jobData(id) as never, { jobId: id }),
        ]);
      } else {
        await client.pipeline().lpush(`${P}:result`, `${id} ${RESPONSE}`).del(key).exec();
        return;
      }
      await client.del(key);
    },
    stageWorkerOptions(
      createRedis(url, `${stage}-worker`, 'worker'),
      P,
      loops,
      EnvSchema.parse({}).JOB_LOCK_MS,
    ),
  );
}

/**
 * The gateway stand-in: node:http on a free loopback port (printed on stdout), each POST's
 * image pushed to `pre`, answered with what `post` pushes to the result list.
 */
function gatewayRole(url: string, transport: Transport): void {
  const client = createRedis(url, 'gateway', 'worker');
  const results = createRedis(url, 'gateway-results', 'worker');
  const pre = transport === 'bullmq' ? createQueue(QueueName.pre, client, P) : undefined;
  const waiting = new Map<string, (body: string) => void>();
  void (async () => {
    for (;;) {
      const r = (await results.call('BLMPOP', '0', '1', `${P}:result`, 'RIGHT', 'COUNT', '256')) as
        [string, string[]] | null;
      for (const entry of r?.[1] ?? []) {
        const space = entry.indexOf(' ');
        const id = entry.slice(0, space);
        waiting.get(id)?.(entry.slice(space + 1));
        waiting.delete(id);
      }
    }
  })();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString()) as { image: { value: string } };
      const image = Buffer.from(body.image.value, 'base64');
      // A UUID, as the pipeline's inference ids (BullMQ refuses integers as job ids).
      const id = randomUUID();
      waiting.set(id, (json) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(json);
      });
      if (pre) {
        void Promise.all([
          client.set(`${P}:data:pre:${id}`, image),
          pre.add(QueueName.pre as never, jobData(id) as never, { jobId: id }),
        ]);
      } else {
        void client.lpush(`${P}:pre`, Buffer.concat([Buffer.from(id), image]));
      }
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    process.stdout.write(`${typeof address === 'object' && address ? address.port : 0}\n`);
  });
}

// Last, once every declaration above is initialised (the roles use the classes).
if (values.help) {
  console.log(HELP);
} else if (values.role) {
  runRole(values.role, values.redis ?? '', Number(values.loops), transportOf(values.queues));
} else {
  await main();
}
