import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import {
  AsyncMetaSchema,
  ResultMessageSchema,
  type AsyncMeta,
  type AsyncStatus,
  type DetectionResponse,
  type ResultMessage,
} from './contracts.js';
import { ErrorCode, type ErrorBody } from './errors.js';
import type { Keys } from './keys.js';
import { parseJson } from './validation.js';

/**
 * The Redis record of asynchronous requests. Nobody waits for an asynchronous request's images:
 * their jobs carry `replyTo = async:<request id>` (asyncReplyTo), and where a synchronous image's
 * result is pushed onto its gateway's reply list, an asynchronous one's is stored in its
 * request's record (shared/reply.ts). Every stage's failure path and `post`'s success path thus
 * finish asynchronous images without knowing about them.
 *
 * A record is two hashes (keys.ts): the request (`meta`, counts, times, webhook state) and its
 * finished images' result messages. Storing a result is one Lua script, so the count, the
 * result and the request's end move together and each image counts exactly once; the script
 * that ends a request, whether its last image or its deadline does, reports it exactly once,
 * which is when its webhook is enqueued. A result for a record that is gone (deleted, expired,
 * or lost with a Redis restart) or already finished is dropped.
 */

/** The `replyTo` of an asynchronous request's jobs. */
export function asyncReplyTo(requestId: string): string {
  return `${ASYNC_TARGET}${requestId}`;
}

/** The asynchronous request a `replyTo` names, or undefined for a gateway's reply list. */
export function asyncRequestOf(replyTo: string): string | undefined {
  return replyTo.startsWith(ASYNC_TARGET) ? replyTo.slice(ASYNC_TARGET.length) : undefined;
}

const ASYNC_TARGET = 'async:';

/** Webhook delivery states kept in the record (`webhook`). */
export type WebhookState = 'queued' | 'delivered' | 'failed' | 'refused';

/** An asynchronous request as read from Redis. */
export interface AsyncRecord {
  meta: AsyncMeta;
  /** Images finished, with a result or an error. */
  done: number;
  /** Epoch ms when a stage first started one of its images. */
  startedAt: number | undefined;
  /** Epoch ms when its last image finished, or its deadline ended it. */
  completedAt: number | undefined;
  webhook: WebhookState | undefined;
  /** Finished images' messages by inference id. */
  results: Map<string, ResultMessage>;
}

/** What storing one image's result did (AsyncRequests.record). */
export type RecordOutcome =
  /** No record (deleted, expired, lost) or already finished: nothing was stored. */
  | { kind: 'dropped' }
  /** Stored; other images are still to come. */
  | { kind: 'recorded' }
  /** Stored, and it was the request's last image: the request is finished, once. */
  | { kind: 'finished'; failed: boolean };

/** The Redis adapter of asynchronous requests' records (see the module comment). */
export class AsyncRequests {
  /**
   * @param resultTtlSeconds how long a finished record stays (ASYNC_RESULT_TTL_S)
   */
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly resultTtlSeconds: number,
  ) {}

  /**
   * Adds the writes of a new record to `multi` (the transaction that also stores the images):
   * it lives until its deadline plus the result TTL, whatever happens to its images.
   */
  create(multi: ReturnType<Redis['multi']>, requestId: string, meta: AsyncMeta): void {
    const key = this.keys.asyncRecord(requestId);
    const ttl = Math.ceil(Math.max(0, meta.deadline - Date.now()) / 1000) + this.resultTtlSeconds;
    multi
      .hset(key, { meta: JSON.stringify(meta), total: meta.images.length, done: 0, failed: 0 })
      .expire(key, ttl);
  }

  /**
   * Notes that a stage started one of the request's images (the request is then `running`).
   *
   * @returns false when the record is gone (deleted, expired or lost): the image's work is
   *   not wanted any more
   */
  async markStarted(requestId: string): Promise<boolean> {
    const n = await runScript(
      this.redis,
      MARK_STARTED,
      [this.keys.asyncRecord(requestId)],
      [String(Date.now())],
    );
    return Number(n) === 1;
  }

  /** Stores one image's result message (see RecordOutcome). */
  async record(requestId: string, message: ResultMessage): Promise<RecordOutcome> {
    const reply = await runScript(
      this.redis,
      RECORD,
      [this.keys.asyncRecord(requestId), this.keys.asyncResults(requestId)],
      [
        message.id,
        JSON.stringify(message),
        message.ok ? '0' : '1',
        String(Date.now()),
        String(this.resultTtlSeconds),
      ],
    );
    const [code, failed] = reply as [number, number];
    if (code === 1) return { kind: 'finished', failed: failed > 0 };
    return code === 0 ? { kind: 'recorded' } : { kind: 'dropped' };
  }

  /**
   * Finishes a request at its deadline: every image without a result gets `error`
   * (DEADLINE_EXCEEDED), the request is finished (`completed_at` its deadline) and its record
   * expires after the result TTL.
   *
   * @returns the finished outcome when this call finished it; `dropped` when it was already
   *   finished or is gone
   */
  async expire(requestId: string, meta: AsyncMeta, error: ErrorBody): Promise<RecordOutcome> {
    // It failed at its deadline (the status document says so from then on, statusDocument).
    const args = [String(meta.deadline), String(this.resultTtlSeconds)];
    for (const id of meta.images)
      args.push(id, JSON.stringify({ id, ok: false, error } satisfies ResultMessage));
    const reply = await runScript(
      this.redis,
      EXPIRE,
      [this.keys.asyncRecord(requestId), this.keys.asyncResults(requestId)],
      args,
    );
    const [code, failed] = reply as [number, number];
    return code === 1 ? { kind: 'finished', failed: failed > 0 } : { kind: 'dropped' };
  }

  /**
   * The record, or undefined when Redis holds none (never accepted, deleted, expired, or lost
   * with a Redis restart). A record or result of another shape is an error, not a guess.
   *
   * @param withResults read the images' results too (a status document needs them once the
   *   request is finished)
   * @throws Error naming the problems of a malformed record
   */
  async read(requestId: string, withResults = true): Promise<AsyncRecord | undefined> {
    const key = this.keys.asyncRecord(requestId);
    const none: Record<string, string> = {};
    const [fields, results] = await Promise.all([
      this.redis.hgetall(key),
      withResults ? this.redis.hgetall(this.keys.asyncResults(requestId)) : Promise.resolve(none),
    ]);
    if (fields['meta'] === undefined) return undefined;
    const meta = parseJson(AsyncMetaSchema, fields['meta']);
    if (!meta.ok) throw new Error(`malformed async record ${key}: ${meta.problems.join('; ')}`);
    const messages = new Map<string, ResultMessage>();
    for (const [id, raw] of Object.entries(results)) {
      const parsed = parseJson(ResultMessageSchema, raw);
      if (!parsed.ok)
        throw new Error(`malformed async result ${id} of ${key}: ${parsed.problems.join('; ')}`);
      messages.set(id, parsed.value);
    }
    const time = (v: string | undefined) => (v === undefined ? undefined : Number(v));
    return {
      meta: meta.value,
      done: Number(fields['done'] ?? 0),
      startedAt: time(fields['started_at']),
      completedAt: time(fields['completed_at']),
      webhook: fields['webhook'] as WebhookState | undefined,
      results: messages,
    };
  }

  /** Records the webhook's delivery state; nothing when the record is gone. */
  async setWebhook(requestId: string, state: WebhookState): Promise<void> {
    await runScript(
      this.redis,
      SET_IF_EXISTS,
      [this.keys.asyncRecord(requestId)],
      ['webhook', state],
    );
  }

  /**
   * Forgets a request: both hashes are deleted, so results still arriving are dropped.
   *
   * @returns its meta, or undefined when there was no record
   */
  async remove(requestId: string): Promise<AsyncMeta | undefined> {
    const record = await this.read(requestId, false);
    await this.redis.del(this.keys.asyncRecord(requestId), this.keys.asyncResults(requestId));
    return record?.meta;
  }
}

/**
 * The body a synchronous request is answered with: the one response, or the list of them in
 * the request's order. The one definition, shared by the synchronous route and the status
 * documents of asynchronous requests.
 */
export function responseBody(
  isList: boolean,
  responses: DetectionResponse[],
): DetectionResponse | DetectionResponse[] {
  return isList ? responses : responses[0]!;
}

/**
 * The status document of a request (AsyncStatusSchema), from its record, at `now` (epoch ms).
 * A request past its deadline whose record was not finished yet (its deadline job has not run)
 * is reported failed as it will be: its images without a result get DEADLINE_EXCEEDED. So it is
 * never `running` past its deadline.
 *
 * @param now epoch ms @defaultValue `Date.now()`
 */
export function statusDocument(
  requestId: string,
  record: AsyncRecord,
  now = Date.now(),
): AsyncStatus {
  const { meta } = record;
  const base = {
    inference_id: requestId,
    created_at: new Date(meta.createdAt).toISOString(),
    images_total: meta.images.length,
  };
  const overdue = record.completedAt === undefined && now > meta.deadline;
  if (record.completedAt === undefined && !overdue) {
    return {
      ...base,
      status: record.startedAt !== undefined || record.done > 0 ? 'running' : 'queued',
      images_done: record.done,
    };
  }
  const completedAt = record.completedAt ?? meta.deadline;
  const finished = { ...base, completed_at: new Date(completedAt).toISOString() };
  const responses: DetectionResponse[] = [];
  for (const id of meta.images) {
    const message = record.results.get(id);
    if (!message) {
      return {
        ...finished,
        status: 'failed',
        images_done: meta.images.length,
        error: {
          code: ErrorCode.DEADLINE_EXCEEDED,
          message: 'no result arrived before the request deadline',
        },
      };
    }
    if (!message.ok)
      return {
        ...finished,
        status: 'failed',
        images_done: meta.images.length,
        error: message.error,
      };
    responses.push(message.response);
  }
  return {
    ...finished,
    status: 'completed',
    images_done: meta.images.length,
    result: responseBody(meta.isList, responses),
  };
}

/** A Lua script and its SHA-1, run with EVALSHA (EVAL once Redis does not know it yet). */
interface Script {
  lua: string;
  sha: string;
}

function script(lua: string): Script {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') };
}

async function runScript(
  redis: Redis,
  s: Script,
  keys: string[],
  args: string[],
): Promise<unknown> {
  try {
    return await redis.evalsha(s.sha, keys.length, ...keys, ...args);
  } catch (err) {
    if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
    return redis.eval(s.lua, keys.length, ...keys, ...args);
  }
}

// KEYS[1] record; ARGV[1] now. 1 when the record exists (started_at set once), else 0.
const MARK_STARTED = script(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[1])
return 1
`);

// KEYS[1] record, KEYS[2] results; ARGV[1] image id, ARGV[2] message, ARGV[3] '1' if it is an
// error, ARGV[4] now, ARGV[5] result TTL s. {1, failed} finished now; {0, 0} stored; {-1, 0}
// no record or already finished; {-2, 0} this image was already stored.
const RECORD = script(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
if redis.call('HEXISTS', KEYS[1], 'completed_at') == 1 then return {-1, 0} end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return {-2, 0} end
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'failed', 1) end
local done = redis.call('HINCRBY', KEYS[1], 'done', 1)
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
if done >= total then
  redis.call('HSET', KEYS[1], 'completed_at', ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  return {1, tonumber(redis.call('HGET', KEYS[1], 'failed'))}
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return {0, 0}
`);

// KEYS[1] record, KEYS[2] results; ARGV[1] now, ARGV[2] result TTL s, then pairs of image id
// and its error message. {1, failed} finished now; {-1, 0} no record or already finished.
const EXPIRE = script(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
if redis.call('HEXISTS', KEYS[1], 'completed_at') == 1 then return {-1, 0} end
local added = 0
for i = 3, #ARGV, 2 do
  added = added + redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
end
local failed = redis.call('HINCRBY', KEYS[1], 'failed', added)
redis.call('HSET', KEYS[1], 'done', redis.call('HGET', KEYS[1], 'total'), 'completed_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {1, failed}
`);

// KEYS[1] hash; ARGV[1] field, ARGV[2] value: set only when the hash exists.
const SET_IF_EXISTS = script(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
`);
