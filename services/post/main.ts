import sharp from 'sharp';
import { decodeCandidates } from '../../shared/candidates.js';
import { QueueName, nowMs } from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { ModelDirectory } from '../../shared/model-directory.js';
import { runStage } from '../../shared/stage-process.js';
import { buildResponse } from './postprocess.js';
import { PixelBudget } from './pixel-budget.js';
import { drawPredictions } from './visualize.js';

/**
 * The `post` stage: takes each image's candidates from Redis, runs NMS and maps the boxes back
 * to the original image (postprocess.ts), draws them on the image when asked (visualize.ts),
 * and sends the finished response to the reply list of the gateway instance that is waiting
 * for it, or to its asynchronous request's record (shared/reply.ts).
 */
// One drawing uses one core; libvips keeps no cache of decoded images between drawings (each
// original is drawn once), so its memory goes back once a drawing is done.
sharp.concurrency(1);
sharp.cache(false);

runStage(QueueName.post, ({ config, log, keys, client, completion }) => {
  const models = new ModelDirectory(client, keys, log);
  const budget = new PixelBudget(config.post.visualizeMaxPixels);
  return {
    concurrency: config.post.concurrency,
    process: async (job, log) => {
      const postStart = nowMs();
      // The gateway saw the model served: a missing description is a restart in progress.
      const model = await models.require(job.modelId, job.deadline);
      const bytes = await client.getBuffer(keys.candidates(job.id));
      if (!bytes)
        throw new PipelineError(ErrorCode.DATA_EXPIRED, 'the model output is no longer in Redis');
      const response = buildResponse({
        inferenceId: job.id,
        candidates: decodeCandidates(bytes),
        params: job.params,
        letterbox: job.letterbox,
        classNames: model.class_names,
        elapsedSeconds: (Date.now() - job.receivedAt) / 1000,
      });
      if (job.params.visualize) {
        // The upload, or the download of a URL image, as `pre` read it.
        const original = await client.getBuffer(keys.image(job.id));
        if (!original)
          throw new PipelineError(ErrorCode.DATA_EXPIRED, 'the image is no longer in Redis');
        const { srcWidth, srcHeight } = job.letterbox;
        const drawn = await budget.run(srcWidth * srcHeight, () =>
          drawPredictions(original, response.predictions, {
            ...job.params.visualize!,
            maxPixels: config.post.maxImagePixels,
          }),
        );
        response.visualization = drawn.toString('base64');
      }
      // The image is finished: its data in every stage's key goes with the answer.
      await completion.results.send(
        job.replyTo,
        { id: job.id, ok: true, response, marks: { ...job.marks, postStart, postEnd: nowMs() } },
        keys.requestData(job.id),
      );
      log.debug(
        { detections: response.predictions.length, batchSize: job.batchSize },
        'result sent',
      );
    },
  };
});
