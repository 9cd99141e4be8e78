import { randomUUID } from 'node:crypto';
import { basename } from 'node:path';
import { decodeCandidates, encodeCandidates } from '../shared/candidates.js';
import type { DetectionParams, DetectionResponse } from '../shared/contracts.js';
import { OnnxModel } from '../services/infer/model.js';
import { buildResponse } from '../services/post/postprocess.js';
import { letterboxImage, type Preprocessed } from '../services/pre/preprocess.js';

/**
 * The pipeline's own stages called in one process, with no HTTP and no Redis: sharp letterbox
 * (services/pre), the onnxruntime session on its thread (services/infer) and NMS with the
 * response (services/post). The in-process limit and the standard deployment server are both
 * built from it, so all three systems of the benchmark run the same code per image.
 */
export interface InlineDetector {
  model: OnnxModel;
  /** Decode + letterbox one image. */
  pre(bytes: Buffer): ReturnType<typeof letterboxImage>;
  /** Model run of a batch of preprocessed images, each with its request's parameters. */
  infer(images: Preprocessed[], params: DetectionParams[]): Promise<Float32Array[]>;
  /** NMS and the response of one image. */
  post(
    candidates: Float32Array,
    params: DetectionParams,
    letterbox: Awaited<ReturnType<typeof letterboxImage>>['letterbox'],
    receivedAt: number,
  ): DetectionResponse;
  close(): Promise<void>;
}

export const DECODE_LIMITS = { maxPixels: 50_000_000, allowSvg: false } as const;

export function detectionParams(confidence: number): DetectionParams {
  return {
    confidence,
    iouThreshold: 0.3,
    classAgnosticNms: false,
    classFilter: null,
    maxDetections: 300,
    maxCandidates: 3000,
  };
}

export async function loadInlineDetector(
  modelPath: string | undefined,
  maxBatchSize: number,
): Promise<InlineDetector> {
  const model = await OnnxModel.load({
    modelId: modelPath ? basename(modelPath, '.onnx') : 'tiny-shapes',
    modelPath,
    classNamesPath: undefined,
    executionProvider: 'cpu',
    maxBatchSize,
  });
  const desc = model.description;
  return {
    model,
    pre: (bytes) => letterboxImage(bytes, desc.input_width, desc.input_height, true, DECODE_LIMITS),
    infer: async (images, params) => {
      const out = await model.run(
        images.map(({ pixels, letterbox: lb }) => ({
          pixels,
          placement: {
            width: lb.resizedWidth,
            height: lb.resizedHeight,
            left: lb.padLeft,
            top: lb.padTop,
          },
        })),
        params.map((p) => ({
          confidence: p.confidence,
          allowedClassIds: null,
          maxCandidates: p.maxCandidates,
        })),
      );
      return out.candidates;
    },
    post: (candidates, params, letterbox, receivedAt) =>
      buildResponse({
        inferenceId: randomUUID(),
        // Through the same binary form the pipeline stores in Redis.
        candidates: decodeCandidates(encodeCandidates(candidates)),
        params,
        letterbox,
        classNames: desc.class_names,
        elapsedSeconds: (Date.now() - receivedAt) / 1000,
      }),
    close: () => model.close(),
  };
}
