import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions } from 'node:dns';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import type { Redis } from 'ioredis';
import type { PreJob } from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import type { Keys } from '../../shared/keys.js';
import { isPublicAddress } from '../../shared/url-guard.js';

/**
 * Where the `pre` processes get an image's bytes: from Redis, where the gateway stored the
 * upload (or the `fetch` worker stored the download), or from the URL the client gave. URL
 * images are fetched by `pre` processes, not the gateway, so the gateway stays light and the
 * download is part of the work that scales with `pre`; they are fetched by a worker of their
 * own (the `fetch` queue), so a slow remote host never holds a decoding slot.
 */
export interface UrlPolicy {
  /** Allow loopback, private and link-local addresses (off by default: see shared/url-guard.ts). */
  allowPrivate: boolean;
  /** Largest download, bytes. */
  maxBytes: number;
  /** Longest wait for a connection (and, once connected, for each read), ms. */
  connectTimeoutMs: number;
  maxRedirects: number;
  /** Longest time the whole download may take, redirects included, ms; the request deadline bounds it too. */
  totalTimeoutMs?: number;
  /**
   * Slowest average rate, bytes/s, a download may have once MIN_RATE_GRACE_MS have passed;
   * 0 or absent: no floor.
   */
  minBytesPerSecond?: number;
}

/**
 * The bytes of an image stored in Redis (an upload, or a finished download).
 *
 * @throws PipelineError DATA_EXPIRED when the key is gone (its TTL passed, or the request ended)
 */
export async function loadStoredImage(redis: Redis, keys: Keys, job: PreJob): Promise<Buffer> {
  const bytes = await redis.getBuffer(keys.image(job.id));
  if (!bytes)
    throw new PipelineError(ErrorCode.DATA_EXPIRED, 'the uploaded image is no longer in Redis');
  return bytes;
}

/**
 * GET with the URL policy: http and https only, every address checked after DNS resolution
 * (on each redirect too), a connect timeout, the earlier of the request deadline and
 * `totalTimeoutMs` as the total timeout, a size limit and a redirect limit.
 *
 * @param deadline epoch ms of the request's deadline
 * @returns the body's bytes
 * @throws PipelineError IMAGE_FETCH_FAILED (address refused, HTTP error, too large, too slow),
 *   DEADLINE_EXCEEDED
 */
export async function fetchImage(
  url: string,
  deadline: number,
  policy: UrlPolicy,
): Promise<Buffer> {
  const fail = (why: string) =>
    new PipelineError(ErrorCode.IMAGE_FETCH_FAILED, `could not fetch ${url}: ${why}`);
  // The earlier of the request's deadline and the download's own limit ends it; say which.
  const own = policy.totalTimeoutMs === undefined ? Infinity : Date.now() + policy.totalTimeoutMs;
  const until = Math.min(deadline, own);
  const late =
    own < deadline
      ? `the download took longer than ${policy.totalTimeoutMs} ms`
      : 'the download did not finish before the request deadline';
  let current = parseUrl(url, undefined, fail);
  for (let redirects = 0; ; redirects++) {
    if (current.protocol !== 'http:' && current.protocol !== 'https:')
      throw fail('only http and https URLs are fetched');
    // Node connects to an IP literal without a DNS lookup, so check those here.
    checkHost(current.hostname, policy.allowPrivate);
    // The rate floor counts from the request, so a host slow to answer is held to it too.
    const hopStart = Date.now();
    const res = await get(current, until, late, policy).catch((err: unknown) => {
      throw err instanceof PipelineError
        ? err
        : fail(err instanceof Error ? err.message : String(err));
    });
    const status = res.statusCode ?? 0;
    if (status >= 300 && status < 400 && res.headers.location) {
      res.resume();
      if (redirects >= policy.maxRedirects)
        throw fail(`more than ${policy.maxRedirects} redirects`);
      current = parseUrl(res.headers.location, current, fail);
      continue;
    }
    if (status !== 200) {
      res.resume();
      throw fail(`HTTP ${status}`);
    }
    const declared = Number(res.headers['content-length'] ?? 0);
    if (declared > policy.maxBytes) {
      res.destroy();
      throw fail(`the image is larger than ${policy.maxBytes} bytes`);
    }
    const chunks: Buffer[] = [];
    let total = 0;
    // A host that trickles is cut off once its average rate stays under the floor.
    const floor = policy.minBytesPerSecond ?? 0;
    const rateCheck =
      floor > 0
        ? setInterval(() => {
            const seconds = (Date.now() - hopStart) / 1000;
            if (seconds * 1000 >= MIN_RATE_GRACE_MS && total / seconds < floor)
              res.destroy(
                new Error(
                  `the download is slower than ${floor} bytes/s (${Math.round(total / seconds)})`,
                ),
              );
          }, 250)
        : undefined;
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        total += chunk.byteLength;
        if (total > policy.maxBytes) {
          res.destroy();
          throw fail(`the image is larger than ${policy.maxBytes} bytes`);
        }
        chunks.push(chunk);
      }
    } catch (err) {
      throw err instanceof PipelineError
        ? err
        : fail(err instanceof Error ? err.message : String(err));
    } finally {
      clearInterval(rateCheck);
    }
    if (total === 0) throw fail('the response body is empty');
    return Buffer.concat(chunks);
  }
}

/** How long a download runs before its average rate is held to the floor (minBytesPerSecond). */
export const MIN_RATE_GRACE_MS = 2000;

/** The URL, or IMAGE_FETCH_FAILED when it is not one (a redirect's Location can be anything). */
function parseUrl(text: string, base: URL | undefined, fail: (why: string) => PipelineError): URL {
  try {
    return new URL(text, base);
  } catch {
    throw fail(`${JSON.stringify(text.slice(0, 200))} is not a valid URL`);
  }
}

/** Starts a GET; the response is destroyed with `late` as its error at `deadline`. */
function get(
  url: URL,
  deadline: number,
  late: string,
  policy: UrlPolicy,
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const remaining = deadline - Date.now();
    if (remaining <= 0)
      return reject(new PipelineError(ErrorCode.DEADLINE_EXCEEDED, 'request deadline passed'));
    const options: RequestOptions = {
      method: 'GET',
      lookup: guardedLookup(policy.allowPrivate),
      timeout: policy.connectTimeoutMs,
    };
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, options, (res) => {
      clearTimeout(total);
      req.setTimeout(0);
      // The rest of the download is bounded by the deadline too.
      const rest = setTimeout(
        () => res.destroy(new Error(late)),
        Math.max(1, deadline - Date.now()),
      );
      res.once('close', () => clearTimeout(rest));
      resolve(res);
    });
    const total = setTimeout(() => req.destroy(new Error(late)), remaining);
    req.once('timeout', () =>
      req.destroy(
        new Error(`no connection, or no response on it, within ${policy.connectTimeoutMs} ms`),
      ),
    );
    req.once('error', (err) => {
      clearTimeout(total);
      reject(err);
    });
    req.end();
  });
}

/** How a host name becomes addresses: node's `dns.lookup` with `all: true`, or a stand-in. */
export type Resolver = (
  hostname: string,
  options: LookupAllOptions,
  callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

/**
 * A DNS lookup for node's http(s) `lookup` option that only hands out the addresses the policy
 * allows (see shared/url-guard.ts): every address `resolve` returns is checked, the refused ones are
 * dropped, and when none is left the lookup fails with IMAGE_FETCH_FAILED, so no connection is
 * attempted.
 *
 * @param resolve - where addresses come from. @defaultValue node's `dns.lookup`
 */
export function guardedLookup(
  allowPrivate: boolean,
  resolve: Resolver = (hostname, options, callback) => dnsLookup(hostname, options, callback),
): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 4);
      const allowed = allowPrivate
        ? addresses
        : addresses.filter((a) => isPublicAddress(a.address));
      if (allowed.length === 0) {
        const error = addressRefused(hostname);
        return callback(error, '', 4);
      }
      if (options.all) return callback(null, allowed, 4);
      const first = allowed[0]!;
      callback(null, first.address, first.family);
    });
  };
}

/**
 * The error of a host the policy does not let a URL reach (IMAGE_FETCH_FAILED, recognised by
 * isAddressRefusal).
 */
function addressRefused(host: string): PipelineError {
  return new PipelineError(
    ErrorCode.IMAGE_FETCH_FAILED,
    `${host} is (or resolves to) a private, loopback or link-local address, or another that is not a public internet address, which image and webhook URLs may not reach`,
    { addressRefused: true },
  );
}

/**
 * Whether `err` is the guard's refusal of an address (from guardedLookup, or a URL's IP
 * literal checked by checkHost), rather than a network failure.
 */
export function isAddressRefusal(err: unknown): boolean {
  return err instanceof PipelineError && err.details?.['addressRefused'] === true;
}

/**
 * Refuses, before any connection, a URL host that is an IP literal the policy does not let a
 * URL reach (Node connects to a literal without a DNS lookup, so guardedLookup never sees it);
 * a host name passes here and is checked on its resolved addresses.
 *
 * @param host the URL's hostname, IPv6 literals with or without brackets
 * @throws PipelineError IMAGE_FETCH_FAILED (isAddressRefusal) for a refused literal
 */
export function checkHost(host: string, allowPrivate: boolean): void {
  const bare = host.replace(/^\[|\]$/g, '');
  if (!allowPrivate && isIP(bare) !== 0 && !isPublicAddress(bare)) throw addressRefused(bare);
}
