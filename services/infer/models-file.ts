import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import type { Config } from '../../shared/config.js';
import { TINY_MODEL_ID } from '../../shared/config.js';
import { MODEL_LAYOUTS, type ModelLayout, type Preprocessing } from '../../shared/model-layout.js';
import { formatIssues } from '../../shared/validation.js';

/**
 * The models one inference process serves: read from the models file (`MODELS_FILE`, YAML or
 * JSON), or made from the one-model shortcut (`MODEL_PATH` / `MODEL_URL`, or nothing for the
 * generated tiny detector). Paths in a models file are relative to the file.
 */
export interface ModelSpec {
  id: string;
  /** Where the ONNX file comes from. */
  source:
    | { kind: 'path'; path: string }
    | { kind: 'url'; url: string; sha256?: string }
    | {
        kind: 'tiny';
      };
  classNamesPath?: string;
  layout?: ModelLayout;
  preprocessing?: Partial<Preprocessing>;
  /** Upper bound for a dynamic batch dimension. */
  maxBatchSize: number;
  /** Loaded at start and never unloaded. */
  pinned: boolean;
  /** Loaded at start (pre-warmed); unloaded like any other when room is needed. */
  preload: boolean;
}

/** A MODELS_FILE that cannot be read or does not validate; its message names the entry. */
export class ModelsFileError extends Error {
  override readonly name = 'ModelsFileError';
}

const Sha256 = z
  .string()
  .regex(/^[0-9a-fA-F]{64}$/, 'a sha256 is 64 hexadecimal characters')
  .transform((s) => s.toLowerCase());

const Entry = z
  .strictObject({
    id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$/, 'letters, digits, . _ / -'),
    path: z.string().min(1).optional(),
    url: z.url({ protocol: /^https?$/ }).optional(),
    sha256: Sha256.optional(),
    builtin: z.literal(TINY_MODEL_ID).optional(),
    class_names: z.string().min(1).optional(),
    layout: z.enum(MODEL_LAYOUTS).optional(),
    preprocessing: z
      .strictObject({
        pad: z.enum(['centre', 'top-left']).optional(),
        channel_order: z.enum(['rgb', 'bgr']).optional(),
        scale: z.number().positive().optional(),
      })
      .optional(),
    max_batch_size: z.number().int().min(1).max(256).optional(),
    pinned: z.boolean().default(false),
    preload: z.boolean().default(false),
  })
  .refine((e) => [e.path, e.url, e.builtin].filter((s) => s !== undefined).length === 1, {
    message: 'give exactly one of path, url or builtin',
  })
  .refine((e) => e.sha256 === undefined || e.url !== undefined, {
    message: 'sha256 checks a download: it needs url',
  });

const ModelsFile = z.strictObject({
  models: z
    .array(Entry)
    .min(1)
    .refine((list) => new Set(list.map((e) => e.id)).size === list.length, {
      message: 'model ids must be unique',
    }),
});

/** Parses a models file's text (YAML, of which JSON is a subset). */
export function parseModelsFile(
  text: string,
  baseDir: string,
  defaultMaxBatch: number,
): ModelSpec[] {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ModelsFileError(`not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  const parsed = ModelsFile.safeParse(raw);
  if (!parsed.success) {
    throw new ModelsFileError(formatIssues(parsed.error).join('; '));
  }
  return parsed.data.models.map((e) => ({
    id: e.id,
    source: e.path
      ? { kind: 'path', path: resolve(baseDir, e.path) }
      : e.url
        ? { kind: 'url', url: e.url, ...(e.sha256 ? { sha256: e.sha256 } : {}) }
        : { kind: 'tiny' },
    ...(e.class_names ? { classNamesPath: resolve(baseDir, e.class_names) } : {}),
    ...(e.layout ? { layout: e.layout } : {}),
    ...(e.preprocessing
      ? {
          preprocessing: {
            ...(e.preprocessing.pad ? { pad: e.preprocessing.pad } : {}),
            ...(e.preprocessing.channel_order
              ? { channelOrder: e.preprocessing.channel_order }
              : {}),
            ...(e.preprocessing.scale ? { scale: e.preprocessing.scale } : {}),
          },
        }
      : {}),
    maxBatchSize: e.max_batch_size ?? defaultMaxBatch,
    pinned: e.pinned,
    preload: e.preload || e.pinned,
  }));
}

/** The served models, from MODELS_FILE or the one-model settings. */
export async function loadModelSpecs(infer: Config['infer']): Promise<ModelSpec[]> {
  if (infer.modelsFile) {
    let text: string;
    try {
      text = await readFile(infer.modelsFile, 'utf8');
    } catch (err) {
      throw new ModelsFileError(
        `MODELS_FILE ${infer.modelsFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      );
    }
    try {
      return parseModelsFile(text, dirname(resolve(infer.modelsFile)), infer.maxBatchSize);
    } catch (err) {
      throw new ModelsFileError(`MODELS_FILE ${infer.modelsFile}: ${(err as Error).message}`);
    }
  }
  const source: ModelSpec['source'] = infer.modelPath
    ? { kind: 'path', path: infer.modelPath }
    : infer.modelUrl
      ? {
          kind: 'url',
          url: infer.modelUrl,
          ...(infer.modelSha256 ? { sha256: infer.modelSha256 } : {}),
        }
      : { kind: 'tiny' };
  return [
    {
      id: infer.modelId,
      source,
      ...(infer.classNamesPath ? { classNamesPath: infer.classNamesPath } : {}),
      ...(infer.layout ? { layout: infer.layout } : {}),
      maxBatchSize: infer.maxBatchSize,
      // As in Roboflow's server, the one model can be unloaded (it loads again on its next
      // request) unless MODEL_PINNED says otherwise; it is pre-warmed either way.
      pinned: infer.modelPinned,
      preload: true,
    },
  ];
}
