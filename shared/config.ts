import { availableParallelism, homedir } from 'node:os';
import { basename, extname, join } from 'node:path';
import { z } from 'zod';
import { MODEL_LAYOUTS, type ModelLayout } from './model-layout.js';

/**
 * The one configuration schema. Every role parses the environment once at startup with
 * `loadConfig()` and fails fast with a list of every bad variable. Each variable is documented
 * in the README with its default; keep the two in step.
 */
const int = (def: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce.number().int().min(min).max(max).default(def);

const EnvSchema = z.object({
  /** Redis for every role. Unset under `npm start`: the supervisor starts a private one. */
  REDIS_URL: z.string().url().default('redis://127.0.0.1:6379'),
  /** Prefix of every Redis key and BullMQ queue, so several stacks can share one Redis. */
  REDIS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . - only')
    .default('sd'),
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
   * like any other, loading again on its next request.
   */
  MODEL_PINNED: z.stringbool().default(false),
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
  URL_FETCH_CONCURRENCY: int(16, 1, 1024),
  /** Longest time one image download may take, redirects included; else IMAGE_FETCH_FAILED. */
  URL_FETCH_TIMEOUT_MS: int(10_000, 100, 3_600_000),
  /** Let image URLs reach loopback, private and link-local addresses (off: see url-guard.ts). */
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
  /** Processes `npm start` runs per role; the worker defaults follow the core count. */
  NUM_WORKERS: int(1, 1, 64),
  NUM_PRE_WORKERS: int(Math.max(1, Math.floor(availableParallelism() / 2)), 1, 256),
  NUM_POST_WORKERS: int(Math.max(1, Math.floor(availableParallelism() / 4)), 1, 256),
  /** How long a stopping process may take to finish its in-flight work. */
  DRAIN_TIMEOUT_MS: int(15_000, 0, 600_000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Env = z.infer<typeof EnvSchema>;

/** Typed, nested configuration derived from the environment. */
export interface Config {
  redis: { url: string; prefix: string };
  gateway: {
    host: string;
    port: number;
    maxBodyBytes: number;
    maxImagesPerRequest: number;
    allowUrlInput: boolean;
    apiKeys: string | undefined;
    apiKeysFile: string | undefined;
    metricsRequireKey: boolean;
    maxInflight: number;
    maxQueueDepth: number;
    requestBodyTimeoutMs: number;
    redisMemoryHighWater: number;
    queueDashboard: 'off' | 'readonly' | 'full';
  };
  metricsPort: number;
  pre: {
    concurrency: number;
    maxImagePixels: number;
    allowSvg: boolean;
    /** How URL images are downloaded (the `fetch` queue, served by `pre` processes). */
    fetch: {
      concurrency: number;
      timeoutMs: number;
      allowPrivate: boolean;
      maxBytes: number;
    };
  };
  post: { concurrency: number; visualizeMaxPixels: number };
  infer: {
    maxBatchSize: number;
    maxBatchDelayMs: number;
    executionProvider: 'cpu' | 'cuda' | 'tensorrt';
    modelPath: string | undefined;
    modelId: string;
    /** Whether the one-model shortcut's model is pinned (MODELS_FILE entries say it themselves). */
    modelPinned: boolean;
    classNamesPath: string | undefined;
    /** Output layout; undefined detects it (see services/infer/layout-detection.ts). */
    layout: ModelLayout | undefined;
    modelUrl: string | undefined;
    modelSha256: string | undefined;
    modelCacheDir: string;
    modelsFile: string | undefined;
    maxActiveModels: number;
    threads: { intraOp: number; allowSpinning: boolean };
  };
  requestTimeoutMs: number;
  jobLockMs: number;
  /** Lifetime of every per-request Redis key: the request deadline plus a margin. */
  dataTtlSeconds: number;
  logLevel: Env['LOG_LEVEL'];
  supervisor: { gatewayProcesses: number; preProcesses: number; postProcesses: number };
  drainTimeoutMs: number;
}

/** The model id of a file or URL: its file name without the extension. */
export function modelIdFromLocation(location: string): string {
  const name = basename(location.split(/[?#]/)[0] ?? location);
  return name.slice(0, name.length - extname(name).length) || name;
}

function defaultCacheDir(): string {
  const base = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(base, 'staged-detect', 'models');
}

/** Model id served when no MODEL_PATH is given: the project's generated tiny detector. */
export const TINY_MODEL_ID = 'tiny-shapes';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** Parses the environment; throws ConfigError listing every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty strings mean "unset", as in most shells' `VAR= cmd`.
  const cleaned = Object.fromEntries(
    Object.entries(env).filter(([, v]) => v !== undefined && v !== ''),
  );
  const parsed = EnvSchema.safeParse(cleaned);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  const sources = [
    e.MODELS_FILE && 'MODELS_FILE',
    e.MODEL_PATH && 'MODEL_PATH',
    e.MODEL_URL && 'MODEL_URL',
  ];
  if (sources.filter(Boolean).length > 1) {
    throw new ConfigError(
      `invalid configuration:\n  ${sources.filter(Boolean).join(', ')}: set only one of them`,
    );
  }
  if (e.MODELS_FILE && cleaned['MODEL_PINNED'] !== undefined) {
    throw new ConfigError(
      'invalid configuration:\n  MODEL_PINNED: pins the one model of MODEL_PATH or MODEL_URL; in MODELS_FILE, give the entry `pinned: true`',
    );
  }
  if (e.MODEL_SHA256 && !e.MODEL_URL) {
    throw new ConfigError(
      'invalid configuration:\n  MODEL_SHA256: checks MODEL_URL, which is not set',
    );
  }
  const location = e.MODEL_PATH ?? e.MODEL_URL;
  const modelId = e.MODEL_ID ?? (location ? modelIdFromLocation(location) : TINY_MODEL_ID);
  return {
    redis: { url: e.REDIS_URL, prefix: e.REDIS_PREFIX },
    gateway: {
      host: e.HOST,
      port: e.PORT,
      maxBodyBytes: e.MAX_BODY_BYTES,
      maxImagesPerRequest: e.MAX_IMAGES_PER_REQUEST,
      allowUrlInput: e.ALLOW_URL_INPUT,
      apiKeys: e.API_KEYS,
      apiKeysFile: e.API_KEYS_FILE,
      metricsRequireKey: e.METRICS_REQUIRE_KEY,
      maxInflight: e.MAX_INFLIGHT,
      maxQueueDepth: e.MAX_QUEUE_DEPTH,
      requestBodyTimeoutMs: e.REQUEST_BODY_TIMEOUT_MS,
      redisMemoryHighWater: e.REDIS_MEMORY_HIGH_WATER,
      queueDashboard: e.QUEUE_DASHBOARD,
    },
    metricsPort: e.METRICS_PORT,
    pre: {
      concurrency: e.PRE_CONCURRENCY,
      maxImagePixels: e.MAX_IMAGE_PIXELS,
      allowSvg: e.ALLOW_SVG,
      fetch: {
        concurrency: e.URL_FETCH_CONCURRENCY,
        timeoutMs: e.URL_FETCH_TIMEOUT_MS,
        allowPrivate: e.ALLOW_PRIVATE_URLS,
        maxBytes: e.MAX_BODY_BYTES,
      },
    },
    post: { concurrency: e.POST_CONCURRENCY, visualizeMaxPixels: e.VISUALIZE_MAX_PIXELS },
    infer: {
      maxBatchSize: e.MAX_BATCH_SIZE,
      maxBatchDelayMs: e.MAX_BATCH_DELAY_MS,
      executionProvider: e.EXECUTION_PROVIDER,
      modelPath: e.MODEL_PATH,
      modelId,
      modelPinned: e.MODEL_PINNED,
      classNamesPath: e.CLASS_NAMES,
      layout: e.MODEL_LAYOUT,
      modelUrl: e.MODEL_URL,
      modelSha256: e.MODEL_SHA256,
      modelCacheDir: e.MODEL_CACHE_DIR,
      modelsFile: e.MODELS_FILE,
      maxActiveModels: e.MAX_ACTIVE_MODELS,
      threads: { intraOp: e.ORT_INTRA_OP_THREADS, allowSpinning: e.ORT_ALLOW_SPINNING },
    },
    requestTimeoutMs: e.REQUEST_TIMEOUT_MS,
    jobLockMs: e.JOB_LOCK_MS,
    dataTtlSeconds: Math.ceil(e.REQUEST_TIMEOUT_MS / 1000) + 60,
    logLevel: e.LOG_LEVEL,
    supervisor: {
      gatewayProcesses: e.NUM_WORKERS,
      preProcesses: e.NUM_PRE_WORKERS,
      postProcesses: e.NUM_POST_WORKERS,
    },
    drainTimeoutMs: e.DRAIN_TIMEOUT_MS,
  };
}

/** loadConfig for a role's entry point: prints every bad variable and exits 1. */
export function loadConfigOrExit(): Config {
  try {
    return loadConfig();
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}
