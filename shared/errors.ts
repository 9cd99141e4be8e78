import { z } from 'zod';

/**
 * Error codes every role agrees on. A code is stable and machine-readable; it travels between
 * processes (inside BullMQ failure reasons and result messages) as a plain string, so the
 * gateway can map it to an HTTP status without knowing which stage raised it.
 */
export const ErrorCode = {
  INVALID_REQUEST: 'INVALID_REQUEST',
  UNSUPPORTED_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  PAYLOAD_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  IMAGE_DECODE_FAILED: 'IMAGE_DECODE_FAILED',
  IMAGE_FETCH_FAILED: 'IMAGE_FETCH_FAILED',
  IMAGE_TOO_LARGE: 'IMAGE_TOO_LARGE',
  UNSUPPORTED_IMAGE: 'UNSUPPORTED_IMAGE',
  UNAUTHORIZED: 'UNAUTHORIZED',
  MODEL_NOT_FOUND: 'MODEL_NOT_FOUND',
  MODEL_EXECUTION_FAILED: 'MODEL_EXECUTION_FAILED',
  MODEL_PINNED: 'MODEL_PINNED',
  DATA_EXPIRED: 'DATA_EXPIRED',
  DEADLINE_EXCEEDED: 'DEADLINE_EXCEEDED',
  NOT_READY: 'NOT_READY',
  OVERLOADED: 'OVERLOADED',
  STORE_FULL: 'STORE_FULL',
  REQUEST_TIMEOUT: 'REQUEST_TIMEOUT',
  CLIENT_CLOSED: 'CLIENT_CLOSED',
  NOT_FOUND: 'NOT_FOUND',
  RESULT_UNKNOWN: 'RESULT_UNKNOWN',
  NOT_IMPLEMENTED: 'NOT_IMPLEMENTED',
  INTERNAL: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** HTTP status the gateway answers for each code. */
export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = {
  INVALID_REQUEST: 400,
  UNSUPPORTED_MEDIA_TYPE: 415,
  PAYLOAD_TOO_LARGE: 413,
  IMAGE_DECODE_FAILED: 400,
  IMAGE_FETCH_FAILED: 400,
  IMAGE_TOO_LARGE: 400,
  UNSUPPORTED_IMAGE: 400,
  UNAUTHORIZED: 401,
  MODEL_NOT_FOUND: 404,
  MODEL_EXECUTION_FAILED: 500,
  MODEL_PINNED: 409,
  // The image's data left Redis (a restart without persistence): the request can be sent again.
  DATA_EXPIRED: 503,
  DEADLINE_EXCEEDED: 504,
  NOT_READY: 503,
  OVERLOADED: 429,
  // Redis is at its memory limit: an overload of the store, not a fault of the request.
  STORE_FULL: 503,
  // The request's headers or body did not arrive within REQUEST_BODY_TIMEOUT_MS.
  REQUEST_TIMEOUT: 408,
  // nginx's status for a request the client closed; the client never sees it.
  CLIENT_CLOSED: 499,
  NOT_FOUND: 404,
  // An asynchronous request id Redis holds nothing for (never accepted, deleted, expired, lost).
  RESULT_UNKNOWN: 404,
  // A Roboflow API route this server does not implement (workflows, classification, CLIP, ...).
  NOT_IMPLEMENTED: 501,
  INTERNAL: 500,
};

/**
 * Codes that mean the input itself is bad: retrying the job cannot help, so the stage fails it
 * at once (BullMQ's UnrecoverableError) and the client hears about it on the first attempt.
 */
const INPUT_ERRORS: ReadonlySet<ErrorCode> = new Set([
  ErrorCode.INVALID_REQUEST,
  ErrorCode.UNSUPPORTED_MEDIA_TYPE,
  ErrorCode.PAYLOAD_TOO_LARGE,
  ErrorCode.IMAGE_DECODE_FAILED,
  ErrorCode.IMAGE_FETCH_FAILED,
  ErrorCode.IMAGE_TOO_LARGE,
  ErrorCode.UNSUPPORTED_IMAGE,
  ErrorCode.MODEL_NOT_FOUND,
  ErrorCode.DATA_EXPIRED,
  ErrorCode.DEADLINE_EXCEEDED,
]);

/** An error with a stable code and a message a person can act on. */
export class PipelineError extends Error {
  override readonly name = 'PipelineError';
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.code = code;
    this.details = details;
  }

  /** True when a retry of the same job cannot succeed. */
  get unrecoverable(): boolean {
    return INPUT_ERRORS.has(this.code);
  }
}

/**
 * Plain form of an error, as it travels between processes (result messages) and out to HTTP
 * clients (every error response): the one definition of the API's error body.
 */
export const ErrorBodySchema = z.object({
  code: z.enum(ErrorCode).describe('Stable machine-readable error code.'),
  message: z.string().describe('What went wrong and what to do about it.'),
});
export type ErrorBody = z.infer<typeof ErrorBodySchema>;

/**
 * Codes that tell the client to come back later: answered with a `Retry-After` header (in
 * seconds, RETRY_AFTER_SECONDS).
 */
export const RETRY_LATER: ReadonlySet<ErrorCode> = new Set([
  ErrorCode.DATA_EXPIRED,
  ErrorCode.NOT_READY,
  ErrorCode.OVERLOADED,
  ErrorCode.STORE_FULL,
]);
export const RETRY_AFTER_SECONDS = 1;

/**
 * Any thrown value as an ErrorBody. Redis's own failures keep their meaning: a store at its
 * `maxmemory` (an `OOM` reply) is STORE_FULL, an unreachable one NOT_READY; anything else
 * unknown becomes INTERNAL with its message.
 */
export function toErrorBody(err: unknown): ErrorBody {
  if (err instanceof PipelineError) return { code: err.code, message: err.message };
  const message = err instanceof Error ? err.message : String(err);
  if (isStoreFull(message))
    return { code: ErrorCode.STORE_FULL, message: 'Redis is out of memory; retry later' };
  if (isRedisUnavailable(message))
    return { code: ErrorCode.NOT_READY, message: 'Redis is not reachable; retry later' };
  return { code: ErrorCode.INTERNAL, message };
}

/** True for Redis's refusal of writes at `maxmemory` with the `noeviction` policy. */
export function isStoreFull(message: string): boolean {
  return /\bOOM\b.*maxmemory/i.test(message);
}

/** True for ioredis's errors about a connection that is down or gave up. */
export function isRedisUnavailable(message: string): boolean {
  return /Connection is closed|MaxRetriesPerRequest|ECONNREFUSED|ECONNRESET|Stream isn't writeable|LOADING/i.test(
    message,
  );
}
