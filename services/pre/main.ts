import sharp from 'sharp';
import { QueueName, contextOf, nowMs } from '../../shared/contracts.js';
import { ModelDirectory } from '../../shared/model-directory.js';
import { createQueue, enqueue } from '../../shared/queues.js';
import { runStage } from '../../shared/stage-process.js';
import { loadImageBytes } from './image-source.js';
import { letterboxImage } from './preprocess.js';

/**
 * The `pre` stage: takes jobs from the `pre` queue, loads the image (from Redis or its URL),
 * decodes, orients and letterboxes it with sharp to the model's input size, stores the uint8
 * pixels in Redis and enqueues the image on the `infer` queue.
 */

// Each job is one image; libvips' own thread pool per image would only fight the job
// concurrency for the same cores.
sharp.concurrency(1);

runStage(QueueName.pre, ({ config, keys, client }) => {
  const models = new ModelDirectory(client, keys);
  const inferQueue = createQueue(QueueName.infer, client, keys.prefix);
  return {
    concurrency: config.pre.concurrency,
    process: async (job, log) => {
      const preStart = nowMs();
      // The gateway saw the model served: a missing description is a restart in progress.
      const model = await models.require(job.modelId, job.deadline);
      const bytes = await loadImageBytes(client, keys, job, {
        allowPrivate: config.pre.allowPrivateUrls,
        maxBytes: config.gateway.maxBodyBytes,
        connectTimeoutMs: 5000,
        maxRedirects: 3,
      });
      // `post` draws on the original image; an upload is still in Redis, a fetched one is not.
      if (job.source.kind === 'url' && job.params.visualize)
        await client.set(keys.fetchedImage(job.id), bytes, 'EX', config.dataTtlSeconds);
      const started = performance.now();
      const { pixels, letterbox } = await letterboxImage(
        bytes,
        model.input_width,
        model.input_height,
        job.autoOrient,
        { maxPixels: config.pre.maxImagePixels, allowSvg: config.pre.allowSvg },
        // A description published before models carried their preprocessing: centred.
        model.preprocessing?.pad ?? 'centre',
      );
      // The upload stays until `post` finishes the image: a retry of this job after a crash
      // between here and the enqueue must still find it.
      await client.set(keys.pixels(job.id), pixels, 'EX', config.dataTtlSeconds);
      const marks = { ...job.marks, preStart, preEnd: nowMs() };
      await enqueue(inferQueue, { ...contextOf(job), marks, letterbox });
      log.debug(
        { ms: performance.now() - started, width: letterbox.srcWidth, height: letterbox.srcHeight },
        'preprocessed',
      );
    },
    close: [['infer queue', () => inferQueue.close()]],
  };
});
