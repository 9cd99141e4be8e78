import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { LATENCY_BUCKETS, METRIC_PREFIX } from '../../shared/metrics.js';

/** What the gateway measures: HTTP traffic, errors by code, and each image's end-to-end time. */
export class GatewayMetrics {
  readonly requests: Counter<'route' | 'method' | 'status_code'>;
  readonly duration: Histogram<'route' | 'method' | 'status_code'>;
  readonly inFlight: Gauge;
  readonly imagesPerRequest: Histogram;
  readonly errors: Counter<'code'>;
  readonly imageLatency: Histogram<'model_id'>;
  /** Asynchronous requests accepted (202). */
  readonly asyncAccepted: Counter;

  /**
   * The unstarted asynchronous images as the gateway last read them, for
   * `sd_async_backlog_images`; set by the server once its StoreMonitor runs.
   */
  readAsyncBacklog: () => number = () => 0;

  constructor(registry: Registry) {
    const asyncBacklog = () => this.readAsyncBacklog();
    const registers = [registry];
    const httpLabels = ['route', 'method', 'status_code'] as const;
    this.requests = new Counter({
      name: `${METRIC_PREFIX}http_requests_total`,
      help: 'HTTP requests answered, by route, method and status code.',
      labelNames: httpLabels,
      registers,
    });
    this.duration = new Histogram({
      name: `${METRIC_PREFIX}http_request_duration_seconds`,
      help: 'Time from receiving an HTTP request to answering it.',
      labelNames: httpLabels,
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.inFlight = new Gauge({
      name: `${METRIC_PREFIX}http_requests_in_flight`,
      help: 'HTTP requests received and not yet answered.',
      registers,
    });
    this.imagesPerRequest = new Histogram({
      name: `${METRIC_PREFIX}request_images`,
      help: 'Images per inference request.',
      buckets: [1, 2, 4, 8, 16, 32, 64],
      registers,
    });
    this.errors = new Counter({
      name: `${METRIC_PREFIX}errors_total`,
      help: 'Error responses, by error code.',
      labelNames: ['code'],
      registers,
    });
    this.imageLatency = new Histogram({
      name: `${METRIC_PREFIX}image_latency_seconds`,
      help: 'End-to-end time of one image, from the request arriving to its result arriving back.',
      labelNames: ['model_id'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.asyncAccepted = new Counter({
      name: `${METRIC_PREFIX}async_requests_accepted_total`,
      help: 'Asynchronous requests accepted (202).',
      registers,
    });
    new Gauge({
      name: `${METRIC_PREFIX}async_backlog_images`,
      help: 'Images of asynchronous requests not yet started in their stage (prioritized jobs of every stage queue), as the gateway last read them.',
      registers,
      collect() {
        this.set(asyncBacklog());
      },
    });
  }
}
