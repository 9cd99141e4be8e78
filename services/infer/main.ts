import { CANDIDATE_STRIDE, encodeCandidates } from '../../shared/candidates.js';
import { QueueName, contextOf, nowMs, type InferJob } from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { publishModel } from '../../shared/model-directory.js';
import { createQueue, enqueue } from '../../shared/queues.js';
import { runStage } from '../../shared/stage-process.js';
import { Batcher } from './batcher.js';
import { InferenceMetrics } from './metrics.js';
import { OnnxModel } from './model.js';

/**
 * The `infer` stage: the one process that owns the model. It takes letterboxed images from the
 * `infer` queue, runs them in dynamic batches (batcher.ts) on the model's own thread, stores
 * each image's compact candidates in Redis and enqueues it on the `post` queue.
 */
interface BatchItem {
  job: InferJob;
  pixels: Buffer;
}

interface ItemResult {
  candidates: Float32Array;
  batchSize: number;
  inferStart: number;
  inferEnd: number;
}

runStage(QueueName.infer, async ({ config, log, keys, client, registry }) => {
  const model = await OnnxModel.load({ ...config.infer });
  const desc = model.description;
  log.info(
    {
      model: desc.model_id,
      provider: desc.execution_provider,
      input: [desc.input_width, desc.input_height],
      batch: model.fixedBatch ?? 'dynamic',
      loadMs: Math.round(model.loadMs),
    },
    'model loaded',
  );
  const metrics = new InferenceMetrics(registry, desc, model.loadMs / 1000);
  await publishModel(client, keys, desc);
  const postQueue = createQueue(QueueName.post, client, keys.prefix);

  const batcher = new Batcher<BatchItem, ItemResult>({
    maxBatchSize: model.maxBatch,
    maxDelayMs: config.infer.maxBatchDelayMs,
    deadlineOf: (item) => item.job.deadline,
    expiredError: () =>
      new PipelineError(
        ErrorCode.DEADLINE_EXCEEDED,
        'request deadline passed before the model ran',
      ),
    run: async (items) => {
      try {
        const inferStart = nowMs();
        const out = await model.run(
          items.map((i) => i.pixels),
          items.map((i) => ({
            confidence: i.job.params.confidence,
            allowedClassIds: classIdsOf(i.job.params.classFilter, desc.class_names),
            maxCandidates: i.job.params.maxCandidates,
          })),
        );
        metrics.batch(items.length, out.timings);
        log.debug({ size: items.length, ...out.timings }, 'batch done');
        const inferEnd = nowMs();
        return out.candidates.map((candidates) => ({
          candidates,
          batchSize: items.length,
          inferStart,
          inferEnd,
        }));
      } catch (err) {
        throw new PipelineError(
          ErrorCode.MODEL_EXECUTION_FAILED,
          `the model failed on this batch: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    },
  });

  return {
    // Twice the batch size, so the next batch fills while one runs.
    concurrency: model.maxBatch * 2,
    heartbeatPayload: JSON.stringify([desc.model_id]),
    // Republished with every heartbeat, so a Redis that restarted empty learns it again.
    everyBeat: () => publishModel(client, keys, desc),
    process: async (job, jobLog) => {
      if (job.modelId !== desc.model_id) {
        throw new PipelineError(
          ErrorCode.MODEL_NOT_FOUND,
          `model '${job.modelId}' is not served by this process`,
        );
      }
      const pixels = await client.getBuffer(keys.pixels(job.id));
      if (!pixels)
        throw new PipelineError(
          ErrorCode.DATA_EXPIRED,
          'the preprocessed image is no longer in Redis',
        );
      const result = await batcher.submit({ job, pixels });
      // The pixels stay until `post` finishes the image, so a retry after a crash finds them.
      await client.set(
        keys.candidates(job.id),
        encodeCandidates(result.candidates),
        'EX',
        config.dataTtlSeconds,
      );
      await enqueue(postQueue, {
        ...contextOf(job),
        marks: { ...job.marks, inferStart: result.inferStart, inferEnd: result.inferEnd },
        letterbox: job.letterbox,
        batchSize: result.batchSize,
      });
      jobLog.debug(
        { batchSize: result.batchSize, candidates: result.candidates.length / CANDIDATE_STRIDE },
        'inferred',
      );
    },
    close: [
      ['batcher', () => Promise.resolve(batcher.close())],
      ['model', () => model.close()],
      ['post queue', () => postQueue.close()],
    ],
  };
});

/** Class ids allowed by a class_filter; names the model does not know are ignored. */
function classIdsOf(filter: string[] | null, names: readonly string[]): number[] | null {
  if (!filter) return null;
  const wanted = new Set(filter);
  return names.flatMap((n, i) => (wanted.has(n) ? [i] : []));
}
