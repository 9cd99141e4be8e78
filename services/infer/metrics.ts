import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { ModelDescription } from '../../shared/contracts.js';
import { LATENCY_BUCKETS, METRIC_PREFIX } from '../../shared/metrics.js';
import type { RunTimings } from './session-protocol.js';

/**
 * What the inference process measures about its model and batches. Executions and images are
 * counted separately, so the average batch size is images / executions (as in Triton).
 */
export class InferenceMetrics {
  private readonly labels: { model_id: string };
  private readonly batchSize: Histogram<'model_id'>;
  private readonly executions: Counter<'model_id'>;
  private readonly images: Counter<'model_id'>;
  private readonly run: Histogram<'model_id'>;
  private readonly prepare: Histogram<'model_id'>;
  private readonly decode: Histogram<'model_id'>;

  constructor(registry: Registry, model: ModelDescription, loadSeconds: number) {
    const registers = [registry];
    const labelNames = ['model_id'] as const;
    this.labels = { model_id: model.model_id };
    this.batchSize = new Histogram({
      name: `${METRIC_PREFIX}inference_batch_size`,
      help: 'Images per model execution.',
      labelNames,
      buckets: [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64],
      registers,
    });
    this.executions = new Counter({
      name: `${METRIC_PREFIX}inference_executions_total`,
      help: 'Model executions (batches run).',
      labelNames,
      registers,
    });
    this.images = new Counter({
      name: `${METRIC_PREFIX}inference_images_total`,
      help: 'Images run through the model.',
      labelNames,
      registers,
    });
    this.run = new Histogram({
      name: `${METRIC_PREFIX}inference_run_seconds`,
      help: 'Model run time per batch (onnxruntime session.run).',
      labelNames,
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.prepare = new Histogram({
      name: `${METRIC_PREFIX}inference_prepare_seconds`,
      help: 'Time per batch to build the float32 input tensor from uint8 pixels.',
      labelNames,
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.decode = new Histogram({
      name: `${METRIC_PREFIX}inference_decode_seconds`,
      help: 'Time per batch to read the model output into compact candidates.',
      labelNames,
      buckets: LATENCY_BUCKETS,
      registers,
    });
    new Gauge({
      name: `${METRIC_PREFIX}model_load_seconds`,
      help: 'Time the model took to load.',
      labelNames,
      registers,
    }).set(this.labels, loadSeconds);
    new Gauge({
      name: `${METRIC_PREFIX}model_info`,
      help: 'The served model (always 1), with its execution provider and input size as labels.',
      labelNames: [
        'model_id',
        'execution_provider',
        'input_width',
        'input_height',
        'max_batch_size',
      ],
      registers,
    }).set(
      {
        model_id: model.model_id,
        execution_provider: model.execution_provider,
        input_width: String(model.input_width),
        input_height: String(model.input_height),
        max_batch_size: String(model.batch_size),
      },
      1,
    );
  }

  /** Records one executed batch. */
  batch(size: number, timings: RunTimings): void {
    this.batchSize.observe(this.labels, size);
    this.executions.inc(this.labels);
    this.images.inc(this.labels, size);
    this.run.observe(this.labels, timings.runMs / 1000);
    this.prepare.observe(this.labels, timings.prepareMs / 1000);
    this.decode.observe(this.labels, timings.decodeMs / 1000);
  }
}
