import type { Redis } from 'ioredis';
import type { ModelDescription } from './contracts.js';
import type { Keys } from './keys.js';

/**
 * Where the roles learn which models are served and how (input size, class names). The
 * inference process publishes each model's description when it loads it; the description stays
 * while the process restarts, so `pre` and `post` keep working across an inference restart.
 * Readers cache descriptions briefly: they are read for every image.
 */
export async function publishModel(
  redis: Redis,
  keys: Keys,
  desc: ModelDescription,
): Promise<void> {
  await redis.hset(keys.models(), desc.model_id, JSON.stringify(desc));
}

export class ModelDirectory {
  private cache: { at: number; models: Map<string, ModelDescription> } | undefined;
  private loading: Promise<Map<string, ModelDescription>> | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly maxAgeMs = 1000,
  ) {}

  /** Every published model, from a cache no older than maxAgeMs. */
  async all(): Promise<Map<string, ModelDescription>> {
    if (this.cache && Date.now() - this.cache.at < this.maxAgeMs) return this.cache.models;
    this.loading ??= this.load().finally(() => {
      this.loading = undefined;
    });
    return this.loading;
  }

  /** Every published model, read from Redis now. */
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

  private async load(): Promise<Map<string, ModelDescription>> {
    const raw = await this.redis.hgetall(this.keys.models());
    const models = new Map<string, ModelDescription>();
    for (const [id, json] of Object.entries(raw))
      models.set(id, JSON.parse(json) as ModelDescription);
    this.cache = { at: Date.now(), models };
    return models;
  }
}
