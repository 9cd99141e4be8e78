import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { ModelDescription } from '../../shared/contracts.js';
import { LATENCY_BUCKETS, METRIC_PREFIX } from '../../shared/metrics.js';
import type { RunTimings } from './session-protocol.js';

/**
 * What the inference process measures about its model and batches. Executions and images are
 * counted separately, so the average batch size is images / executions (as in Triton).
 */
export class InferenceMetrics {
  private readonly batchSize: Histogram<'model_id'>;
  private readonly executions: Counter<'model_id'>;
  private readonly images: Counter<'model_id'>;
  private readonly run: Histogram<'model_id'>;
  private readonly prepare: Histogram<'model_id'>;
  private readonly decode: Histogram<'model_id'>;
  private readonly loadSeconds: Gauge<'model_id'>;
  private readonly loads: Counter<'model_id'>;
  private readonly loadedGauge: Gauge<'model_id'>;
  private readonly info: Gauge<
    'model_id' | 'execution_provider' | 'input_width' | 'input_height' | 'max_batch_size' | 'layout'
  >;

  /**
   * @param waiting images waiting for a batch now (the scheduler's count), read at each scrape
   */
  constructor(registry: Registry, waiting: () => number) {
    const registers = [registry];
    new Gauge({
      name: `${METRIC_PREFIX}inference_waiting_images`,
      help: 'Images in the inference process waiting for their batch to run, all models.',
      registers,
      collect() {
        this.set(waiting());
      },
    });
    const labelNames = ['model_id'] as const;
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
    this.loadSeconds = new Gauge({
      name: `${METRIC_PREFIX}model_load_seconds`,
      help: 'Time the model took to load, the last time it was loaded.',
      labelNames,
      registers,
    });
    this.loads = new Counter({
      name: `${METRIC_PREFIX}model_loads_total`,
      help: 'Times the model was loaded (at start, on first use, after being unloaded).',
      labelNames,
      registers,
    });
    this.loadedGauge = new Gauge({
      name: `${METRIC_PREFIX}model_loaded`,
      help: 'Whether the model is loaded now (1) or unloaded until used (0).',
      labelNames,
      registers,
    });
    this.info = new Gauge({
      name: `${METRIC_PREFIX}model_info`,
      help: 'A served model (always 1), with its execution provider, input size and layout as labels.',
      labelNames: [
        'model_id',
        'execution_provider',
        'input_width',
        'input_height',
        'max_batch_size',
        'layout',
      ],
      registers,
    });
  }

  /** Records a served model's description and whether it is loaded. */
  described(model: ModelDescription): void {
    this.info.set(
      {
        model_id: model.model_id,
        execution_provider: model.execution_provider,
        input_width: String(model.input_width),
        input_height: String(model.input_height),
        max_batch_size: String(model.batch_size),
        layout: model.layout,
      },
      1,
    );
    this.loadedGauge.set({ model_id: model.model_id }, model.loaded ? 1 : 0);
  }

  /** Records one load of a model. */
  loaded(modelId: string, seconds: number): void {
    this.loads.inc({ model_id: modelId });
    this.loadSeconds.set({ model_id: modelId }, seconds);
  }

  /** Records one executed batch. */
  batch(modelId: string, size: number, timings: RunTimings): void {
    const labels = { model_id: modelId };
    this.batchSize.observe(labels, size);
    this.executions.inc(labels);
    this.images.inc(labels, size);
    this.run.observe(labels, timings.runMs / 1000);
    this.prepare.observe(labels, timings.prepareMs / 1000);
    this.decode.observe(labels, timings.decodeMs / 1000);
  }
}
