import { createHmac } from 'node:crypto';
import { request as httpRequest, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { checkHost, guardedLookup } from './image-source.js';

/**
 * One webhook delivery: a POST of a finished asynchronous request's status document to its
 * `webhook_url`, signed, under the same address guard as image URLs (shared/url-guard.ts:
 * ALLOW_PRIVATE_URLS), with a connect timeout and a total timeout. Redirects are not followed
 * (a 3xx is not a delivery).
 */
export interface WebhookPolicy {
  /** Allow loopback, private and link-local addresses (ALLOW_PRIVATE_URLS). */
  allowPrivate: boolean;
  /** Longest wait for a connection, ms. */
  connectTimeoutMs: number;
  /** Longest time the whole delivery may take, ms. */
  totalTimeoutMs: number;
}

/**
 * The signature header's value: `sha256=` and the hex HMAC-SHA256 of the exact body bytes
 * (UTF-8) with the secret (WEBHOOK_SECRET), as GitHub signs its webhooks.
 */
export function webhookSignature(body: string, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(body, 'utf8').digest('hex')}`;
}

/**
 * POSTs `body` (JSON) to `url` with `Content-Type: application/json`, `X-Inference-Id` and
 * `X-Signature-256`; the response body is read and dropped.
 *
 * @returns the response's HTTP status
 * @throws PipelineError IMAGE_FETCH_FAILED with isAddressRefusal() for an address the policy
 *   refuses (no connection is made); Error for a network failure or a timeout
 */
export async function postWebhook(
  url: string,
  body: string,
  headers: { inferenceId: string; signature: string },
  policy: WebhookPolicy,
): Promise<number> {
  const target = new URL(url);
  checkHost(target.hostname, policy.allowPrivate);
  const options: RequestOptions = {
    method: 'POST',
    lookup: guardedLookup(policy.allowPrivate),
    headers: {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'user-agent': 'staged-detect-webhook',
      'x-inference-id': headers.inferenceId,
      'x-signature-256': headers.signature,
    },
  };
  return await new Promise<number>((resolve, reject) => {
    const req = (target.protocol === 'https:' ? httpsRequest : httpRequest)(
      target,
      options,
      (res) => {
        clearTimeout(connect);
        res.on('error', reject);
        res.on('end', () => {
          clearTimeout(total);
          resolve(res.statusCode ?? 0);
        });
        res.resume();
      },
    );
    const total = setTimeout(
      () => req.destroy(new Error(`no answer within ${policy.totalTimeoutMs} ms`)),
      policy.totalTimeoutMs,
    );
    // A connect timeout only: once connected, the receiver may take until the total timeout
    // to answer (a socket `timeout` option would be an idle timeout, cutting off a receiver
    // that works on the result before it answers).
    const connect = setTimeout(
      () => req.destroy(new Error(`no connection within ${policy.connectTimeoutMs} ms`)),
      policy.connectTimeoutMs,
    );
    req.once('socket', (socket) => {
      if (!socket.connecting) clearTimeout(connect);
      else socket.once('connect', () => clearTimeout(connect));
    });
    req.once('error', (err) => {
      clearTimeout(total);
      clearTimeout(connect);
      reject(err);
    });
    req.end(body);
  });
}
