import type { Redis } from 'ioredis';
import type { PreJob } from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import type { Keys } from '../../shared/keys.js';

/**
 * Where the `pre` stage gets an image's bytes: from Redis, where the gateway stored the upload,
 * or from the URL the client gave. URL images are fetched here, not in the gateway, so the
 * gateway stays light and the download is part of the work that scales with `pre`.
 */
export async function loadImageBytes(
  redis: Redis,
  keys: Keys,
  job: PreJob,
  maxBytes: number,
): Promise<Buffer> {
  if (job.source.kind === 'stored') {
    const bytes = await redis.getBuffer(keys.image(job.id));
    if (!bytes)
      throw new PipelineError(ErrorCode.DATA_EXPIRED, 'the uploaded image is no longer in Redis');
    return bytes;
  }
  return fetchImage(job.source.url, job.deadline, maxBytes);
}

async function fetchImage(url: string, deadline: number, maxBytes: number): Promise<Buffer> {
  const fail = (why: string) =>
    new PipelineError(ErrorCode.IMAGE_FETCH_FAILED, `could not fetch ${url}: ${why}`);
  let response: Response;
  try {
    response = await fetch(url, {
      signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())),
      redirect: 'follow',
    });
  } catch (err) {
    throw fail(
      err instanceof Error
        ? err.cause instanceof Error
          ? err.cause.message
          : err.message
        : String(err),
    );
  }
  if (!response.ok) throw fail(`HTTP ${response.status}`);
  const declared = Number(response.headers.get('content-length') ?? 0);
  if (declared > maxBytes) throw fail(`the image is larger than ${maxBytes} bytes`);
  if (!response.body) throw fail('empty response');
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    total += chunk.byteLength;
    if (total > maxBytes) throw fail(`the image is larger than ${maxBytes} bytes`);
    chunks.push(Buffer.from(chunk));
  }
  if (total === 0) throw fail('the response body is empty');
  return Buffer.concat(chunks);
}
