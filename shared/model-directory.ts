import type { Redis } from 'ioredis';
import { ModelDescriptionsSchema, type ModelDescription } from './contracts.js';
import { ErrorCode, PipelineError } from './errors.js';
import { HEARTBEAT_INTERVAL_MS, HEARTBEAT_TTL_MS, listAlive } from './heartbeat.js';
import type { Keys } from './keys.js';
import { sleep } from './deadline.js';
import type { Logger } from './logger.js';
import { parseJson } from './validation.js';

/**
 * Where the roles learn which models are served and how (input size, class names). Each
 * inference process publishes the descriptions of its models as the value of its heartbeat
 * (`alive:infer:<instance>`, see heartbeat.ts), so a description lives exactly as long as a
 * live inference process publishes it: a process that stops takes its models with it, one that
 * dies loses them when its heartbeat expires (HEARTBEAT_TTL_MS), and after Redis restarted
 * empty they are back with the next beat. Readers cache the directory briefly: it is read for
 * every image.
 */
export const INFER_ROLE = 'infer';

/**
 * The heartbeat value of an inference process: its models' descriptions, a JSON array read back
 * with ModelDescriptionsSchema.
 */
export function modelsPayload(descriptions: readonly ModelDescription[]): string {
  return JSON.stringify(descriptions);
}

/** Reads the served models from the inference heartbeats, cached for `maxAgeMs`. */
export class ModelDirectory {
  private cache: { at: number; models: Map<string, ModelDescription> } | undefined;
  private loading: Promise<Map<string, ModelDescription>> | undefined;

  /**
   * Inference instances whose heartbeat value was malformed, with the problems last logged, so
   * a bad value is logged when it appears (or changes), not on every read.
   */
  private readonly reported = new Map<string, string>();

  /**
   * @param log where a malformed heartbeat value is reported (error level); none: not reported
   * @param maxAgeMs how old a cached directory may be before it is read again
   * @defaultValue maxAgeMs 1000
   */
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly log?: Logger,
    private readonly maxAgeMs = 1000,
  ) {}

  /** Every served model (model id → description), from a cache no older than maxAgeMs. */
  async all(): Promise<Map<string, ModelDescription>> {
    if (this.cache && Date.now() - this.cache.at < this.maxAgeMs) return this.cache.models;
    this.loading ??= this.load().finally(() => {
      this.loading = undefined;
    });
    return this.loading;
  }

  /** Every served model, read from Redis now. */
  async fresh(): Promise<Map<string, ModelDescription>> {
    this.cache = undefined;
    return this.all();
  }

  /** One model's description; reloads once on a miss, since a model may have just appeared. */
  async get(modelId: string): Promise<ModelDescription | undefined> {
    const hit = (await this.all()).get(modelId);
    if (hit) return hit;
    this.cache = undefined;
    return (await this.all()).get(modelId);
  }

  /**
   * The description of a model a request was accepted for. The gateway saw the model served;
   * if it is missing now, an inference process is restarting or Redis restarted empty, which a
   * beat or two repairs: this waits for it until `until` (epoch ms), at most HEARTBEAT_TTL_MS.
   *
   * @throws PipelineError NOT_READY (retryable) when no live inference process publishes it
   */
  async require(modelId: string, until: number): Promise<ModelDescription> {
    const stop = Math.min(until, Date.now() + HEARTBEAT_TTL_MS);
    for (;;) {
      const desc = await this.get(modelId);
      if (desc) return desc;
      if (Date.now() >= stop) {
        throw new PipelineError(
          ErrorCode.NOT_READY,
          `model '${modelId}' is not published by any live inference process at the moment; retry later`,
        );
      }
      await sleep(Math.min(HEARTBEAT_INTERVAL_MS / 4, Math.max(1, stop - Date.now())));
    }
  }

  private async load(): Promise<Map<string, ModelDescription>> {
    const alive = await listAlive(this.redis, this.keys, INFER_ROLE);
    const models = new Map<string, ModelDescription>();
    for (const [instance, payload] of alive) {
      for (const desc of this.descriptionsOf(instance, payload)) {
        // Two inference processes serving one model: a loaded copy wins for `loaded`.
        const seen = models.get(desc.model_id);
        if (!seen || (!seen.loaded && desc.loaded)) models.set(desc.model_id, desc);
      }
    }
    for (const instance of this.reported.keys())
      if (!alive.has(instance)) this.reported.delete(instance);
    this.cache = { at: Date.now(), models };
    return models;
  }

  /**
   * An inference heartbeat's descriptions, parsed with ModelDescriptionsSchema. A value of
   * another shape publishes nothing (its models are not served, rather than served wrongly) and
   * is logged as an error once per instance and problem.
   */
  private descriptionsOf(instance: string, payload: string): ModelDescription[] {
    const parsed = parseJson(ModelDescriptionsSchema, payload);
    if (parsed.ok) {
      this.reported.delete(instance);
      return parsed.value;
    }
    const problems = parsed.problems.join('; ');
    if (this.reported.get(instance) !== problems) {
      this.reported.set(instance, problems);
      this.log?.error(
        { instance, problems: parsed.problems },
        'malformed model descriptions in an inference heartbeat; its models are not served',
      );
    }
    return [];
  }
}

/**
 * The served model a request asks for (`requested`), or the only one served when it names none.
 * The one place a request's model is resolved (the inference routes and the model routes).
 *
 * @param served the directory, model id → description
 * @throws PipelineError NOT_READY when no model is served (an inference process is starting or
 *   restarting, or Redis is); MODEL_NOT_FOUND for a model that is not served; INVALID_REQUEST
 *   when none is named and several are served
 */
export function resolveModel(
  requested: string | undefined,
  served: ReadonlyMap<string, ModelDescription>,
): ModelDescription {
  if (served.size === 0)
    throw new PipelineError(ErrorCode.NOT_READY, 'no inference process serves a model yet; retry');
  const ids = () => [...served.keys()].join(', ');
  if (requested !== undefined) {
    const desc = served.get(requested);
    if (desc) return desc;
    throw new PipelineError(
      ErrorCode.MODEL_NOT_FOUND,
      `model '${requested}' is not served here; served: ${ids()}`,
    );
  }
  const [only, ...others] = served.values();
  if (only && others.length === 0) return only;
  throw new PipelineError(ErrorCode.INVALID_REQUEST, `model_id is required; served: ${ids()}`);
}
