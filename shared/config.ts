import { readFileSync } from 'node:fs';
import { availableParallelism, homedir } from 'node:os';
import { basename, extname, join } from 'node:path';
import { z } from 'zod';
import { MODEL_LAYOUTS } from './model-layout.js';
import { formatIssues } from './validation.js';

/**
 * The one configuration schema. Every role parses the environment once at startup with
 * `loadConfig()` and fails fast with a list of every bad variable, cross-variable conflicts
 * included. ConfigSchema reads the variables (EnvSchema: names, defaults, ranges), checks how
 * they combine and transforms them into the nested Config, whose type is derived from it: one
 * definition, no interface or mapping beside it. Each role reads its own section. Each variable
 * is documented in the README's configuration table with its default; a test keeps the two in
 * step.
 */
const int = (def: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce.number().int().min(min).max(max).default(def);

/** Connections and waits of URL downloads beyond what the variables set. */
const URL_CONNECT_TIMEOUT_MS = 5000;
const URL_MAX_REDIRECTS = 3;

/**
 * What is wrong with the query of a `unix:///path?…` REDIS_URL, or undefined: ioredis reads its
 * parameters as connection options, so only the database number (digits) and the credentials
 * are accepted (`?db=abc` would make the first SELECT fail at runtime instead of here).
 */
function unixQueryProblem(url: string): string | undefined {
  for (const [key, value] of new URL(url).searchParams) {
    if (key === 'db' && /^\d+$/.test(value)) continue;
    if (key === 'username' || key === 'password') continue;
    return key;
  }
  return undefined;
}

/** The environment variables, each with its default and range (see the README's table). */
export const EnvSchema = z.object({
  /**
   * Redis for every role: `redis://`, `rediss://` (TLS), or `unix:///path/to/redis.sock` (a
   * Unix socket on this machine, see redisTarget). Unset under `npm start`: the supervisor
   * starts a private one.
   */
  REDIS_URL: z
    .url({
      protocol: /^(rediss?|unix)$/,
      error: 'a redis://, rediss:// or unix:///path URL',
    })
    .refine((url) => !url.startsWith('unix:') || /^unix:\/\/\/./.test(url), {
      error: 'a unix:// URL names an absolute socket path: unix:///path/to/redis.sock',
    })
    .refine((url) => !url.startsWith('unix:') || unixQueryProblem(url) === undefined, {
      error: 'a unix:// URL takes only ?db=<number>, ?username= and ?password=',
    })
    .default('redis://127.0.0.1:6379'),
  /** Prefix of every Redis key and BullMQ queue, so several stacks can share one Redis. */
  REDIS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . - only')
    .default('sd'),
  /** Listen address of the gateway, and of the workers' /metrics. */
  HOST: z.string().min(1).default('0.0.0.0'),
  PORT: int(9001, 0, 65535),
  /** Bull Board at /admin/queues: off, readonly or full (retry, clean, remove jobs). */
  QUEUE_DASHBOARD: z.enum(['off', 'readonly', 'full']).default('readonly'),
  /** Port of /metrics for the worker roles (the gateway serves it on PORT); 0 picks a free one. */
  METRICS_PORT: int(9464, 0, 65535),
  PRE_CONCURRENCY: int(2, 1, 256),
  POST_CONCURRENCY: int(8, 1, 1024),
  /** Pixels (width × height) `post` draws at once for visualize_predictions; more wait. */
  VISUALIZE_MAX_PIXELS: int(32_000_000, 1_000_000),
  MAX_BATCH_SIZE: int(8, 1, 1024),
  MAX_BATCH_DELAY_MS: int(5, 0, 10_000),
  EXECUTION_PROVIDER: z.enum(['cpu', 'cuda', 'tensorrt']).default('cpu'),
  /** ONNX model file; unset means the project's generated tiny detector. */
  MODEL_PATH: z.string().min(1).optional(),
  MODEL_ID: z.string().min(1).optional(),
  /**
   * Keep the one model of MODEL_PATH / MODEL_URL loaded for good: `/model/remove` and
   * `/model/clear` leave it (409 MODEL_PINNED). Off, it is pre-warmed at start and unloaded
   * like any other, loading again on its next request. Default false; optional here so that
   * setting it beside MODELS_FILE can be refused.
   */
  MODEL_PINNED: z.stringbool().optional(),
  /** Class names file, one per line; used when the model embeds no `names` metadata. */
  CLASS_NAMES: z.string().min(1).optional(),
  /** Output layout of MODEL_PATH; unset detects it from the output shape and metadata. */
  MODEL_LAYOUT: z.enum(MODEL_LAYOUTS).optional(),
  /** Download the one model from here (http/https) instead of MODEL_PATH. */
  MODEL_URL: z.url({ protocol: /^https?$/ }).optional(),
  /** Expected sha256 of the MODEL_URL download; a mismatch stops the start. */
  MODEL_SHA256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, '64 hexadecimal characters')
    .transform((s) => s.toLowerCase())
    .optional(),
  /** Where downloaded models are kept between starts. */
  MODEL_CACHE_DIR: z.string().min(1).default(defaultCacheDir()),
  /** Several models (YAML or JSON); replaces MODEL_PATH / MODEL_URL. */
  MODELS_FILE: z.string().min(1).optional(),
  /** Models the inference process keeps loaded at once; the least recently used goes first. */
  MAX_ACTIVE_MODELS: int(4, 1, 1024),
  /** onnxruntime threads per operator (CPU); 0 lets onnxruntime pick one per core. */
  ORT_INTRA_OP_THREADS: int(0, 0, 1024),
  /** Let onnxruntime's idle threads spin for the next run (keeps cores busy). */
  ORT_ALLOW_SPINNING: z.stringbool().default(false),
  /**
   * onnxruntime sessions per model that run batches side by side; 0: two on a CPU with at least
   * 2 cores, else one (see modelInstances). On the CPU a solo session with every core joins
   * them for a batch that finds the model idle (services/infer/model.ts, sessionLayout).
   */
  MODEL_INSTANCES: int(0, 0, 16),
  REQUEST_TIMEOUT_MS: int(30_000, 100, 3_600_000),
  /** A request's headers and body must arrive within this; else 408 REQUEST_TIMEOUT. */
  REQUEST_BODY_TIMEOUT_MS: int(30_000, 1000, 3_600_000),
  /** Fraction of Redis's maxmemory above which the gateway refuses new requests (STORE_FULL). */
  REDIS_MEMORY_HIGH_WATER: z.coerce.number().gt(0).max(1).default(0.9),
  /**
   * How long a worker's claim on a job lasts without renewal. A job whose worker died is taken
   * up again between this and 1.5× this later, well within the request deadline.
   */
  JOB_LOCK_MS: int(5000, 1000, 600_000),
  MAX_BODY_BYTES: int(16 * 1024 * 1024, 1024),
  MAX_IMAGES_PER_REQUEST: int(16, 1, 1024),
  /** Largest image (width × height) `pre` decodes; checked from the header first. */
  MAX_IMAGE_PIXELS: int(50_000_000, 1),
  /** SVG input can reference other files and URLs: off unless enabled. */
  ALLOW_SVG: z.stringbool().default(false),
  /** `image.type = url`; off refuses URL images at the gateway. */
  ALLOW_URL_INPUT: z.stringbool().default(true),
  /** Downloads of URL images one `pre` process runs at once (apart from its decoding slots). */
  URL_FETCH_CONCURRENCY: int(32, 1, 1024),
  /** Longest time one image download may take, redirects included; else IMAGE_FETCH_FAILED. */
  URL_FETCH_TIMEOUT_MS: int(10_000, 100, 3_600_000),
  /**
   * Slowest average download rate kept past its first 2 s, bytes/s (0: no floor); slower ones
   * fail with IMAGE_FETCH_FAILED, so a trickling host frees its download slots early.
   */
  URL_FETCH_MIN_BYTES_PER_S: int(4096, 0),
  /** Let image URLs reach loopback, private and link-local addresses (off: see shared/url-guard.ts). */
  ALLOW_PRIVATE_URLS: z.stringbool().default(false),
  /** API keys, comma-separated; with API_KEYS_FILE (one per line). None: the API is open. */
  API_KEYS: z.string().optional(),
  API_KEYS_FILE: z.string().min(1).optional(),
  /** With API keys set, whether /metrics needs one too (Prometheus would then send it). */
  METRICS_REQUIRE_KEY: z.stringbool().default(false),
  /** Inference requests one gateway process holds at once; more get 429. */
  MAX_INFLIGHT: int(256, 1, 100_000),
  /** Images waiting in the `pre` queue above which new requests get 429. */
  MAX_QUEUE_DEPTH: int(1024, 1, 10_000_000),
  /** Longest list of images in one asynchronous request. */
  ASYNC_MAX_IMAGES: int(1000, 1, 100_000),
  /** How long a finished asynchronous request's status and result are kept, seconds. */
  ASYNC_RESULT_TTL_S: int(86_400, 1, 30 * 86_400),
  /** Deadline of an asynchronous request from its arrival, ms. */
  ASYNC_TIMEOUT_MS: int(600_000, 100, 7 * 86_400_000),
  /** Unfinished asynchronous images (all requests) past which new ones get 429. */
  ASYNC_MAX_BACKLOG: int(10_000, 1, 100_000_000),
  /** Delivery attempts of one webhook, with exponential backoff between them. */
  ASYNC_WEBHOOK_ATTEMPTS: int(5, 1, 100),
  /**
   * Webhook deliveries one `pre` process makes at once: a receiver that does not answer holds
   * one of them for up to WEBHOOK_TIMEOUT_MS per attempt, so many, since waiting costs nothing.
   */
  WEBHOOK_CONCURRENCY: int(256, 1, 10_000),
  /** Longest time one webhook POST may take before the attempt counts as failed, ms. */
  WEBHOOK_TIMEOUT_MS: int(10_000, 100, 600_000),
  /** Key of the webhooks' HMAC-SHA256 signature; without it `webhook_url` is refused. */
  WEBHOOK_SECRET: z.string().min(1).optional(),
  /** A file holding WEBHOOK_SECRET (its first line), e.g. a mounted secret. */
  WEBHOOK_SECRET_FILE: z.string().min(1).optional(),
  /** Processes `npm start` runs per role; the worker defaults follow the core count. */
  NUM_WORKERS: int(1, 1, 64),
  NUM_PRE_WORKERS: int(Math.max(1, Math.floor(availableParallelism() / 2)), 1, 256),
  NUM_POST_WORKERS: int(Math.max(1, Math.floor(availableParallelism() / 4)), 1, 256),
  /** How long a stopping process may take to finish its in-flight work. */
  DRAIN_TIMEOUT_MS: int(15_000, 0, 600_000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

/** The model id of a file or URL: its file name without the extension. */
export function modelIdFromLocation(location: string): string {
  const name = basename(location.split(/[?#]/)[0] ?? location);
  return name.slice(0, name.length - extname(name).length) || name;
}

function defaultCacheDir(): string {
  const base = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(base, 'staged-detect', 'models');
}

/**
 * The webhooks' signing key: WEBHOOK_SECRET, or the first line of WEBHOOK_SECRET_FILE (read
 * when called, at a role's start); undefined when neither is set.
 *
 * @throws ConfigError when the file cannot be read or its first line is empty
 */
export function webhookSecret(async: Config['async']): string | undefined {
  if (async.webhookSecret !== undefined) return async.webhookSecret;
  if (async.webhookSecretFile === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(async.webhookSecretFile, 'utf8');
  } catch (err) {
    throw new ConfigError(
      `invalid configuration:\n  WEBHOOK_SECRET_FILE: ${(err as Error).message}`,
    );
  }
  const secret = text.split(/\r?\n/)[0]?.trim() ?? '';
  if (secret === '')
    throw new ConfigError('invalid configuration:\n  WEBHOOK_SECRET_FILE: the file is empty');
  return secret;
}

/** Model id served when no MODEL_PATH is given: the project's generated tiny detector. */
export const TINY_MODEL_ID = 'tiny-shapes';

/** A configuration that cannot start: its message lists every problem. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/**
 * Variables that cannot be set together: checked on the raw values (so the conflicts are listed
 * with the other problems, even when a value is bad too), each problem under the variable that
 * should go.
 */
function checkCombinations(
  e: Partial<Record<keyof z.input<typeof EnvSchema>, unknown>>,
  ctx: z.RefinementCtx,
): void {
  const sources = (['MODELS_FILE', 'MODEL_PATH', 'MODEL_URL'] as const).filter(
    (name) => e[name] !== undefined,
  );
  if (sources.length > 1) {
    ctx.addIssue({ code: 'custom', path: [sources.join(', ')], message: 'set only one of them' });
  }
  if (e.MODELS_FILE !== undefined && e.MODEL_PINNED !== undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['MODEL_PINNED'],
      message:
        'pins the one model of MODEL_PATH or MODEL_URL; in MODELS_FILE, give the entry `pinned: true`',
    });
  }
  if (e.WEBHOOK_SECRET !== undefined && e.WEBHOOK_SECRET_FILE !== undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['WEBHOOK_SECRET, WEBHOOK_SECRET_FILE'],
      message: 'set only one of them',
    });
  }
  // A list longer than the whole asynchronous backlog could never be admitted: it would get
  // 429 and "retry later" for ever.
  const maxImages = EnvSchema.shape.ASYNC_MAX_IMAGES.safeParse(e.ASYNC_MAX_IMAGES);
  const maxBacklog = EnvSchema.shape.ASYNC_MAX_BACKLOG.safeParse(e.ASYNC_MAX_BACKLOG);
  if (maxImages.success && maxBacklog.success && maxImages.data > maxBacklog.data) {
    ctx.addIssue({
      code: 'custom',
      path: ['ASYNC_MAX_IMAGES'],
      message: `is over ASYNC_MAX_BACKLOG (${maxBacklog.data}): a request that long could never be admitted`,
    });
  }
  if (e.MODEL_SHA256 !== undefined && e.MODEL_URL === undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['MODEL_SHA256'],
      message: 'checks MODEL_URL, which is not set',
    });
  }
}

/** The nested configuration of valid variables: one section per role. */
function toConfig(e: z.output<typeof EnvSchema>) {
  const location = e.MODEL_PATH ?? e.MODEL_URL;
  return {
    /** Redis, for every role. */
    redis: { url: e.REDIS_URL, prefix: e.REDIS_PREFIX },
    /** The HTTP gateway. */
    gateway: {
      host: e.HOST,
      port: e.PORT,
      /** Largest request body, bytes. */
      maxBodyBytes: e.MAX_BODY_BYTES,
      maxImagesPerRequest: e.MAX_IMAGES_PER_REQUEST,
      allowUrlInput: e.ALLOW_URL_INPUT,
      /** Comma-separated API keys, as given. */
      apiKeys: e.API_KEYS,
      apiKeysFile: e.API_KEYS_FILE,
      metricsRequireKey: e.METRICS_REQUIRE_KEY,
      maxInflight: e.MAX_INFLIGHT,
      maxQueueDepth: e.MAX_QUEUE_DEPTH,
      requestBodyTimeoutMs: e.REQUEST_BODY_TIMEOUT_MS,
      /** Fraction (0..1] of Redis's maxmemory. */
      redisMemoryHighWater: e.REDIS_MEMORY_HIGH_WATER,
      queueDashboard: e.QUEUE_DASHBOARD,
    },
    /** The process shell of every worker role (`pre`, `infer`, `post`; stage-process.ts). */
    worker: {
      /** Listen address of the worker's /metrics (HOST). */
      metricsHost: e.HOST,
      /** Port of the worker's /metrics; 0 picks a free one. */
      metricsPort: e.METRICS_PORT,
      /** How long a worker's claim on a job lasts without renewal, ms. */
      jobLockMs: e.JOB_LOCK_MS,
    },
    pre: {
      concurrency: e.PRE_CONCURRENCY,
      /** Largest image decoded, width × height. */
      maxImagePixels: e.MAX_IMAGE_PIXELS,
      allowSvg: e.ALLOW_SVG,
      /** How URL images are downloaded (the `fetch` queue, served by `pre` processes). */
      fetch: {
        concurrency: e.URL_FETCH_CONCURRENCY,
        /** The URL policy of each download (services/pre/image-source.ts' UrlPolicy). */
        policy: {
          allowPrivate: e.ALLOW_PRIVATE_URLS,
          /** Largest download, bytes: MAX_BODY_BYTES, as for an upload. */
          maxBytes: e.MAX_BODY_BYTES,
          /** Longest wait for a connection and, once connected, for each read, ms. */
          connectTimeoutMs: URL_CONNECT_TIMEOUT_MS,
          maxRedirects: URL_MAX_REDIRECTS,
          /** Longest time one download may take, redirects included, ms. */
          totalTimeoutMs: e.URL_FETCH_TIMEOUT_MS,
          /** Slowest average rate kept past the first 2 s of a download, bytes/s; 0: none. */
          minBytesPerSecond: e.URL_FETCH_MIN_BYTES_PER_S,
        },
      },
    },
    post: {
      concurrency: e.POST_CONCURRENCY,
      /** Pixels drawn at once for visualize_predictions. */
      visualizeMaxPixels: e.VISUALIZE_MAX_PIXELS,
      /** Largest image decoded for drawing, width × height (MAX_IMAGE_PIXELS, as in `pre`). */
      maxImagePixels: e.MAX_IMAGE_PIXELS,
    },
    infer: {
      maxBatchSize: e.MAX_BATCH_SIZE,
      maxBatchDelayMs: e.MAX_BATCH_DELAY_MS,
      executionProvider: e.EXECUTION_PROVIDER,
      modelPath: e.MODEL_PATH,
      /** MODEL_ID, else the file name of MODEL_PATH / MODEL_URL, else TINY_MODEL_ID. */
      modelId: e.MODEL_ID ?? (location ? modelIdFromLocation(location) : TINY_MODEL_ID),
      /** Whether the one-model shortcut's model is pinned (MODELS_FILE entries say it themselves). */
      modelPinned: e.MODEL_PINNED ?? false,
      classNamesPath: e.CLASS_NAMES,
      /** Output layout; undefined detects it (see services/infer/model-layout.ts). */
      layout: e.MODEL_LAYOUT,
      modelUrl: e.MODEL_URL,
      /** Lower-case hex. */
      modelSha256: e.MODEL_SHA256,
      modelCacheDir: e.MODEL_CACHE_DIR,
      modelsFile: e.MODELS_FILE,
      maxActiveModels: e.MAX_ACTIVE_MODELS,
      threads: { intraOp: e.ORT_INTRA_OP_THREADS, allowSpinning: e.ORT_ALLOW_SPINNING },
      instances: modelInstances(e.MODEL_INSTANCES, e.EXECUTION_PROVIDER),
    },
    /** Asynchronous requests (services/gateway/async-routes.ts, shared/async-requests.ts). */
    async: {
      maxImages: e.ASYNC_MAX_IMAGES,
      /** Seconds a finished request's record is kept. */
      resultTtlSeconds: e.ASYNC_RESULT_TTL_S,
      /** Deadline from arrival, ms. */
      timeoutMs: e.ASYNC_TIMEOUT_MS,
      /** Unfinished asynchronous images at which new requests are refused (429). */
      maxBacklog: e.ASYNC_MAX_BACKLOG,
      webhookAttempts: e.ASYNC_WEBHOOK_ATTEMPTS,
      webhookConcurrency: e.WEBHOOK_CONCURRENCY,
      webhookTimeoutMs: e.WEBHOOK_TIMEOUT_MS,
      /** The signing key, as given; or read from `webhookSecretFile` (webhookSecret()). */
      webhookSecret: e.WEBHOOK_SECRET,
      webhookSecretFile: e.WEBHOOK_SECRET_FILE,
    },
    /** How many processes of each role `npm start` runs. */
    supervisor: {
      gatewayProcesses: e.NUM_WORKERS,
      preProcesses: e.NUM_PRE_WORKERS,
      postProcesses: e.NUM_POST_WORKERS,
    },
    /** Deadline of a request, ms. */
    requestTimeoutMs: e.REQUEST_TIMEOUT_MS,
    /** Lifetime of every per-request Redis key: the request deadline plus a margin, seconds. */
    dataTtlSeconds: Math.ceil(e.REQUEST_TIMEOUT_MS / 1000) + 60,
    logLevel: e.LOG_LEVEL,
    /** How long a stopping process may take to finish its in-flight work, ms. */
    drainTimeoutMs: e.DRAIN_TIMEOUT_MS,
  };
}

/**
 * The configuration schema: the environment (EnvSchema), checked as a whole, as the nested
 * Config. Empty values must be removed first (loadConfig does).
 */
export const ConfigSchema = EnvSchema.superRefine((e, ctx) => checkCombinations(e, ctx), {
  // Also when a variable is bad, so that every problem is listed at once.
  when: () => true,
}).transform(toConfig);

/** Typed, nested configuration, derived from ConfigSchema. */
export type Config = z.output<typeof ConfigSchema>;

/**
 * Parses the environment.
 *
 * @param env the variables; an empty value means unset, as in most shells' `VAR= cmd`
 * @defaultValue env `process.env`
 * @throws ConfigError listing every bad variable (`  NAME: problem`, one a line)
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const cleaned = Object.fromEntries(
    Object.entries(env).filter(([, v]) => v !== undefined && v !== ''),
  );
  const parsed = ConfigSchema.safeParse(cleaned);
  if (!parsed.success) {
    const lines = formatIssues(parsed.error).map((line) => `  ${line}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}

/** loadConfig for a role's entry point: prints every bad variable and exits with status 1. */
export function loadConfigOrExit(): Config {
  try {
    return loadConfig();
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}

/**
 * Sessions per model that run batches side by side (Triton's instance count): `configured`
 * when above 0; else 2 on the CPU when the machine has at least 2 cores, and 1 on CUDA or
 * TensorRT (a GPU keeps itself busy with one batch at a time, and each session holds its own
 * copy of the weights in GPU memory). On 2 cores, yolov8n ran 33 images/s in one session of 2
 * threads and 37 in two (services/infer/model.ts, sessionLayout, which also adds the CPU's
 * solo session).
 *
 * @param cores the machine's cores (default: availableParallelism())
 */
export function modelInstances(
  configured: number,
  provider: 'cpu' | 'cuda' | 'tensorrt',
  cores = availableParallelism(),
): number {
  if (configured > 0) return configured;
  return provider === 'cpu' && cores >= 2 ? 2 : 1;
}
