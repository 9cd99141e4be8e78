import type { ModelDescription } from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { ModelLoadError, OnnxModel, type ModelOptions } from './model.js';
import { cachedModel } from './model-source.js';
import type { ModelSpec } from './models-file.js';
import type { ExecutionProvider, SessionThreads } from './session-protocol.js';

/**
 * The models of the inference process. Every listed model is opened once at start, to learn
 * its input size, classes and layout (and to fail early on a broken file); pinned and
 * pre-warmed models then stay loaded, the others are closed until a request needs them. At
 * most `maxActive` models are loaded at once: loading one more first unloads the least
 * recently used model that is not pinned and not running.
 */
export interface PoolOptions {
  maxActive: number;
  executionProvider: ExecutionProvider;
  cacheDir: string;
  threads: SessionThreads;
  /** Sessions per model that run batches side by side (model.ts, sessionLayout). */
  instances: number;
  log: Logger;
  /** Called whenever a model is loaded or unloaded, with its new description. */
  onChange: (desc: ModelDescription) => Promise<void>;
  /** Called once per load, with the model and the load time. */
  onLoad?: (model: OnnxModel) => void;
}

interface Entry {
  spec: ModelSpec;
  options: ModelOptions;
  description: ModelDescription;
  model: OnnxModel | undefined;
  loading: Promise<OnnxModel> | undefined;
  /** Runs in progress on the model; it is not unloaded while this is above zero. */
  busy: number;
  /** Settles when the model is idle again. */
  idle: Promise<void>;
  markIdle: () => void;
  lastUsed: number;
}

/**
 * The models of the inference process: every listed model opened once at start, at most
 * `maxActive` kept loaded (least recently used unloaded first, pinned ones never), loads and
 * unloads never during a model's run.
 */
export class ModelPool {
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  private constructor(private readonly opts: PoolOptions) {}

  /** Resolves every model's file, opens each once and keeps the pinned and pre-warmed ones. */
  static async start(specs: readonly ModelSpec[], opts: PoolOptions): Promise<ModelPool> {
    const pinned = specs.filter((s) => s.pinned).length;
    if (pinned > opts.maxActive) {
      throw new ModelLoadError(
        `${pinned} models are pinned but MAX_ACTIVE_MODELS is ${opts.maxActive}: raise it or pin fewer`,
      );
    }
    const pool = new ModelPool(opts);
    try {
      // Pinned first, then pre-warmed, so those are the ones that stay loaded.
      const order = [...specs].sort((a, b) => rank(a) - rank(b));
      let kept = 0;
      for (const spec of order) {
        const options = await pool.optionsOf(spec);
        const model = await OnnxModel.load(options);
        const keep = spec.preload && kept < opts.maxActive;
        if (keep) kept++;
        const entry: Entry = {
          spec,
          options,
          description: { ...model.description, loaded: keep, pinned: spec.pinned },
          model: keep ? model : undefined,
          loading: undefined,
          busy: 0,
          idle: Promise.resolve(),
          markIdle: () => {},
          lastUsed: 0,
        };
        pool.entries.set(spec.id, entry);
        if (keep) opts.onLoad?.(model);
        else await model.close();
        opts.log.info(
          {
            model: spec.id,
            layout: model.description.layout,
            layoutFrom: model.layoutSource,
            input: [model.description.input_width, model.description.input_height],
            provider: model.description.execution_provider,
            batch: model.fixedBatch ?? 'dynamic',
            sessions: model.sessions,
            loadMs: Math.round(model.loadMs),
            state: keep ? (spec.pinned ? 'pinned' : 'pre-warmed') : 'unloaded until used',
          },
          'model ready',
        );
      }
    } catch (err) {
      await pool.close();
      throw err;
    }
    return pool;
  }

  /** Every served model, loaded or not. */
  descriptions(): ModelDescription[] {
    return [...this.entries.values()].map((e) => e.description);
  }

  has(modelId: string): boolean {
    return this.entries.has(modelId);
  }

  /** Largest batch of a model. */
  maxBatchOf(modelId: string): number {
    return this.entries.get(modelId)?.description.batch_size ?? 1;
  }

  /** Runs `fn` on the model, loading it first if needed; it stays loaded while `fn` runs. */
  async use<T>(modelId: string, fn: (model: OnnxModel) => Promise<T>): Promise<T> {
    const entry = this.entry(modelId);
    entry.busy++;
    if (entry.busy === 1)
      entry.idle = new Promise((r) => {
        entry.markIdle = r;
      });
    try {
      const model = await this.load(entry);
      entry.lastUsed = Date.now();
      return await fn(model);
    } finally {
      entry.lastUsed = Date.now();
      if (--entry.busy === 0) entry.markIdle();
    }
  }

  /** Loads a model now (`/model/add`). */
  async add(modelId: string): Promise<void> {
    const entry = this.entry(modelId);
    await this.load(entry);
    entry.lastUsed = Date.now();
  }

  /** Unloads a model (`/model/remove`); pinned models stay. */
  async remove(modelId: string): Promise<void> {
    const entry = this.entry(modelId);
    if (entry.spec.pinned) {
      throw new PipelineError(
        ErrorCode.MODEL_PINNED,
        `model '${modelId}' is pinned: it stays loaded`,
      );
    }
    await this.unload(entry);
  }

  /** Unloads every model that is not pinned (`/model/clear`). */
  async clear(): Promise<void> {
    await Promise.all(
      [...this.entries.values()].filter((e) => !e.spec.pinned).map((e) => this.unload(e)),
    );
  }

  /** Closes every model. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      [...this.entries.values()].flatMap((e) => (e.model ? [e.model.close()] : [])),
    );
  }

  private entry(modelId: string): Entry {
    const entry = this.entries.get(modelId);
    if (!entry) {
      throw new PipelineError(
        ErrorCode.MODEL_NOT_FOUND,
        `model '${modelId}' is not served by this process`,
      );
    }
    return entry;
  }

  private load(entry: Entry): Promise<OnnxModel> {
    if (entry.model) return Promise.resolve(entry.model);
    if (this.closed) return Promise.reject(new Error('the model pool is closed'));
    entry.loading ??= (async () => {
      await this.makeRoom(entry);
      const started = Date.now();
      try {
        const model = await OnnxModel.load(entry.options);
        entry.model = model;
        entry.description = { ...model.description, loaded: true, pinned: entry.spec.pinned };
        this.opts.onLoad?.(model);
        this.opts.log.info({ model: entry.spec.id, ms: Date.now() - started }, 'model loaded');
        await this.opts.onChange(entry.description);
        return model;
      } catch (err) {
        throw new PipelineError(
          ErrorCode.MODEL_EXECUTION_FAILED,
          `model '${entry.spec.id}' failed to load: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    })().finally(() => {
      entry.loading = undefined;
    });
    return entry.loading;
  }

  /** Unloads least recently used models until one more fits. */
  private async makeRoom(wanted: Entry): Promise<void> {
    for (;;) {
      const loaded = [...this.entries.values()].filter(
        (e) => e !== wanted && (e.model !== undefined || e.loading !== undefined),
      );
      if (loaded.length < this.opts.maxActive) return;
      const victims = loaded.filter(
        (e) => !e.spec.pinned && e.model !== undefined && e.loading === undefined,
      );
      if (victims.length === 0) return; // Only pinned or loading models: go over the limit briefly.
      victims.sort((a, b) => a.busy - b.busy || a.lastUsed - b.lastUsed);
      await this.unload(victims[0]!);
    }
  }

  private async unload(entry: Entry): Promise<void> {
    if (entry.loading) await entry.loading.catch(() => {});
    const model = entry.model;
    if (!model) return;
    // A model is unloaded between runs, never during one.
    while (entry.busy > 0) await entry.idle;
    if (entry.model !== model) return;
    entry.model = undefined;
    await model.close();
    entry.description = { ...entry.description, loaded: false };
    this.opts.log.info({ model: entry.spec.id }, 'model unloaded');
    await this.opts.onChange(entry.description);
  }

  private async optionsOf(spec: ModelSpec): Promise<ModelOptions> {
    const modelPath =
      spec.source.kind === 'path'
        ? spec.source.path
        : spec.source.kind === 'url'
          ? await cachedModel({
              url: spec.source.url,
              sha256: spec.source.sha256,
              cacheDir: this.opts.cacheDir,
              log: this.opts.log,
            })
          : undefined;
    return {
      modelId: spec.id,
      modelPath,
      classNamesPath: spec.classNamesPath,
      executionProvider: this.opts.executionProvider,
      maxBatchSize: spec.maxBatchSize,
      layout: spec.layout,
      preprocessing: spec.preprocessing,
      threads: this.opts.threads,
      instances: this.opts.instances,
    };
  }
}

function rank(spec: ModelSpec): number {
  return spec.pinned ? 0 : spec.preload ? 1 : 2;
}
