import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ErrorCode, PipelineError } from '../../shared/errors.js';

/**
 * Optional API keys. When keys are configured, a request must carry one: as `api_key` in the
 * JSON body or the query string (Roboflow's way), or as `Authorization: Bearer <key>`. Keys are
 * compared through their SHA-256 digests with a constant-time comparison, and never logged.
 */
/** A hook that lets a request through or answers 401. */
export type KeyGuard = (
  req: FastifyRequest,
  reply: FastifyReply,
) => Promise<FastifyReply | undefined>;

/** The configured API keys (SHA-256 digests only) and the guards that check them. */
export class ApiKeys {
  private readonly digests: Buffer[];

  constructor(keys: readonly string[]) {
    this.digests = keys.map(digest);
  }

  /** Keys from API_KEYS (comma-separated) and API_KEYS_FILE (one per line). */
  static fromConfig(inline: string | undefined, file: string | undefined): ApiKeys {
    const keys = (inline ?? '').split(',');
    if (file) keys.push(...readFileSync(file, 'utf8').split(/\r?\n/));
    return new ApiKeys(keys.map((k) => k.trim()).filter(Boolean));
  }

  get enabled(): boolean {
    return this.digests.length > 0;
  }

  /** True when `candidate` is one of the keys. Every key is compared, whatever matches. */
  accepts(candidate: string | undefined): boolean {
    if (candidate === undefined || candidate === '') return false;
    const d = digest(candidate);
    let ok = false;
    for (const key of this.digests) ok = timingSafeEqual(key, d) || ok;
    return ok;
  }

  /**
   * A fastify hook that answers 401 itself unless the request carries a valid key (itself, not
   * through the error handler: plugins such as Bull Board have their own).
   */
  guard(): KeyGuard {
    return this.guardWith(keyOf);
  }

  /**
   * The guard of the queue dashboard (a page in a browser, whose own requests carry no key):
   * its static files are open, and a page opened with a valid `?api_key=` sets that key as a
   * cookie (HttpOnly, SameSite=Strict, path `path`) that the page's API calls then carry.
   *
   * @param path the dashboard's base path
   */
  dashboardGuard(path: string): KeyGuard {
    const checkKey = this.guardWith((req) => keyOf(req) ?? cookieKey(req));
    return async (req, reply) => {
      if (!this.enabled) return;
      if (req.url.startsWith(`${path}/static/`)) return;
      const answered = await checkKey(req, reply);
      if (answered) return answered;
      const fromQuery = (req.query as Record<string, unknown> | undefined)?.['api_key'];
      if (typeof fromQuery === 'string') {
        void reply.header(
          'set-cookie',
          `${KEY_COOKIE}=${encodeURIComponent(fromQuery)}; Path=${path}; HttpOnly; SameSite=Strict`,
        );
      }
      return undefined;
    };
  }

  private guardWith(keyOfRequest: (req: FastifyRequest) => string | undefined): KeyGuard {
    return async (req, reply) => {
      if (!this.enabled || this.accepts(keyOfRequest(req))) return;
      const error = new PipelineError(
        ErrorCode.UNAUTHORIZED,
        'a valid API key is required (api_key, or Authorization: Bearer <key>)',
      );
      await reply.code(401).send({ code: error.code, message: error.message });
      return reply;
    };
  }
}

/** The cookie in which the dashboard's page keeps its API key. */
const KEY_COOKIE = 'sd_api_key';

function cookieKey(req: FastifyRequest): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const at = part.indexOf('=');
    if (at > 0 && part.slice(0, at).trim() === KEY_COOKIE)
      return decodeURIComponent(part.slice(at + 1).trim());
  }
  return undefined;
}

function keyOf(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  // The scheme's name is case-insensitive (RFC 9110, 11.1).
  const bearer = /^bearer\s+(.+)$/i.exec(auth ?? '');
  if (bearer) return bearer[1]!.trim();
  const fromQuery = (req.query as Record<string, unknown> | undefined)?.['api_key'];
  if (typeof fromQuery === 'string') return fromQuery;
  const body = req.body;
  if (body && typeof body === 'object' && !Buffer.isBuffer(body)) {
    const fromBody = (body as Record<string, unknown>)['api_key'];
    if (typeof fromBody === 'string') return fromBody;
  }
  return undefined;
}

function digest(key: string): Buffer {
  return createHash('sha256').update(key).digest();
}
