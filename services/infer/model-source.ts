import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { Logger } from '../../shared/logger.js';
import { ModelLoadError } from './model.js';

/**
 * Model files that come from a URL: downloaded once into the cache folder, checked against the
 * expected sha256 when one is given, and reused on the next start. A download is written to a
 * temporary name and renamed when complete and verified, so a crash never leaves a partial
 * file under the cached name.
 */
export interface DownloadOptions {
  url: string;
  sha256?: string | undefined;
  cacheDir: string;
  /** Whole-download limit. */
  timeoutMs?: number;
  log?: Logger;
}

/** Returns the path of the cached model file, downloading it first when needed. */
export async function cachedModel(opts: DownloadOptions): Promise<string> {
  const file = join(opts.cacheDir, cacheName(opts.url, opts.sha256));
  if (await exists(file)) {
    if (!opts.sha256) return file;
    const actual = await sha256File(file);
    if (actual === opts.sha256) return file;
    opts.log?.warn(
      { file, expected: opts.sha256, actual },
      'cached model is corrupt; downloading again',
    );
    await rm(file, { force: true });
  }
  await mkdir(opts.cacheDir, { recursive: true }).catch((err: NodeJS.ErrnoException) => {
    throw new ModelLoadError(`model cache folder ${opts.cacheDir}: ${err.code ?? err.message}`);
  });
  const partial = `${file}.${process.pid}.partial`;
  const started = Date.now();
  try {
    const actual = await download(opts.url, partial, opts.timeoutMs ?? 600_000);
    if (opts.sha256 && actual !== opts.sha256) {
      throw new ModelLoadError(
        `model download ${redact(opts.url)}: sha256 mismatch (expected ${opts.sha256}, got ${actual})`,
      );
    }
    await rename(partial, file);
  } finally {
    await rm(partial, { force: true });
  }
  opts.log?.info({ url: redact(opts.url), file, ms: Date.now() - started }, 'model downloaded');
  return file;
}

/** The cache file name: the expected hash when known, else a hash of the URL. */
function cacheName(url: string, sha256: string | undefined): string {
  if (sha256) return `${sha256}.onnx`;
  return `url-${createHash('sha256').update(url).digest('hex').slice(0, 32)}.onnx`;
}

async function download(url: string, to: string, timeoutMs: number): Promise<string> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'follow' });
  } catch (err) {
    throw new ModelLoadError(`model download ${redact(url)} failed: ${describe(err)}`);
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    throw new ModelLoadError(`model download ${redact(url)} failed: HTTP ${res.status}`);
  }
  const hash = createHash('sha256');
  const hashing = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  try {
    await pipeline(
      Readable.fromWeb(res.body as WebReadableStream<Uint8Array>),
      hashing,
      createWriteStream(to),
    );
  } catch (err) {
    throw new ModelLoadError(`model download ${redact(url)} failed: ${describe(err)}`);
  }
  return hash.digest('hex');
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** A URL for logs and errors, without credentials or query (which may hold tokens). */
function redact(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause;
    const detail = cause instanceof Error ? `: ${cause.message}` : '';
    return err.name === 'TimeoutError' ? 'timed out' : `${err.message}${detail}`;
  }
  return String(err);
}
