/** The part of autocannon's API the benchmark uses (the package ships no types). */
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events';

  export interface Histogram {
    min: number;
    max: number;
    average: number;
    stddev: number;
    p50: number;
    p90: number;
    p97_5: number;
    p99: number;
    p99_9: number;
  }

  export interface Result {
    requests: Histogram & { total: number; sent: number };
    latency: Histogram;
    duration: number;
    errors: number;
    timeouts: number;
    non2xx: number;
    '2xx': number;
    statusCodeStats: Record<string, { count: number }>;
  }

  export interface RawRequest {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
  }

  export interface Options {
    url: string;
    connections?: number;
    duration?: number;
    timeout?: number;
    method?: string;
    headers?: Record<string, string>;
    requests?: Array<RawRequest & { setupRequest?: (req: RawRequest) => RawRequest }>;
  }

  export interface Instance extends EventEmitter {
    stop(): void;
  }

  interface Autocannon {
    (opts: Options, cb: (err: Error | null, result: Result) => void): Instance;
    track(
      instance: Instance,
      opts?: {
        outputStream?: NodeJS.WritableStream;
        renderProgressBar?: boolean;
        renderResultsTable?: boolean;
        progressBarString?: string;
      },
    ): void;
  }
  const autocannon: Autocannon;
  export default autocannon;
}
