import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyBaseLogger, FastifyError } from 'fastify';
import { ErrorCode, PipelineError, toErrorBody, type ErrorBody } from '../../shared/errors.js';

/**
 * The shape of every error the gateway answers: `{"code", "message"}` with the status the API
 * documents for the code (shared/errors.ts), whatever raised it: a stage, a route, a plugin with
 * an error handler of its own, fastify itself, or Node's HTTP parser before fastify saw a
 * request.
 */

/** The API's code for an HTTP status that came without one (fastify's, a plugin's). */
const CODE_OF_STATUS: Readonly<Record<number, ErrorCode>> = {
  401: ErrorCode.UNAUTHORIZED,
  404: ErrorCode.NOT_FOUND,
  408: ErrorCode.REQUEST_TIMEOUT,
  413: ErrorCode.PAYLOAD_TOO_LARGE,
  415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
  429: ErrorCode.OVERLOADED,
  501: ErrorCode.NOT_IMPLEMENTED,
  503: ErrorCode.NOT_READY,
  504: ErrorCode.DEADLINE_EXCEEDED,
};

/** The API's error code for an HTTP status: CODE_OF_STATUS, else INVALID_REQUEST or INTERNAL. */
function codeForStatus(status: number): ErrorCode {
  return CODE_OF_STATUS[status] ?? (status < 500 ? ErrorCode.INVALID_REQUEST : ErrorCode.INTERNAL);
}

/**
 * The body the error handler answers for any error: a PipelineError as it is; fastify's own
 * 4xx errors by their status (codeForStatus), with their message; anything else as
 * toErrorBody reads it (Redis full or unreachable keep their meaning), and an unknown failure
 * as INTERNAL without its details (they go to the log).
 */
export function toHttpError(err: FastifyError): ErrorBody {
  if (err instanceof PipelineError) return { code: err.code, message: err.message };
  const status = err.statusCode ?? 500;
  if (status >= 400 && status < 500) return { code: codeForStatus(status), message: err.message };
  const body = toErrorBody(err);
  return body.code === ErrorCode.INTERNAL ? { ...body, message: 'internal error' } : body;
}

/**
 * The API's error body of an error response about to be sent: the body itself when it has the
 * API's shape (`rewritten` false), else one made from its status and its message, if it has
 * one (`rewritten` true). Undefined for a stream, which is left as it is.
 *
 * @param payload what was about to be sent (string, Buffer or stream)
 */
export function apiErrorBody(
  status: number,
  payload: unknown,
): { body: ErrorBody; rewritten: boolean } | undefined {
  if (typeof payload !== 'string' && !Buffer.isBuffer(payload)) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload.toString());
  } catch {
    parsed = undefined;
  }
  const fields = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Record<
    string,
    unknown
  >;
  const { code, message } = fields;
  if (typeof code === 'string' && code in ErrorCode && typeof message === 'string')
    return { body: { code: code as ErrorCode, message }, rewritten: false };
  return {
    body: {
      code: codeForStatus(status),
      message: typeof message === 'string' ? message : (STATUS_CODES[status] ?? 'error'),
    },
    rewritten: true,
  };
}

/**
 * fastify's `clientErrorHandler`: errors Node's HTTP parser raises before fastify has a request
 * (timeouts of headers or body, malformed HTTP), answered in the API's shape (408
 * REQUEST_TIMEOUT, 431 or 400 INVALID_REQUEST); then the connection is closed.
 */
export function clientError(
  this: { log: FastifyBaseLogger },
  err: NodeJS.ErrnoException,
  socket: Duplex,
): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, body]: [number, ErrorBody] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [
          408,
          {
            code: ErrorCode.REQUEST_TIMEOUT,
            message: 'the request did not arrive completely in time; send it again',
          },
        ]
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, { code: ErrorCode.INVALID_REQUEST, message: 'the request headers are too large' }]
        : [400, { code: ErrorCode.INVALID_REQUEST, message: 'malformed HTTP request' }];
  this.log.debug({ err: err.message, status }, 'client error');
  // A response already under way for this socket cannot be replaced; otherwise answer.
  const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (socket.writable && !inFlight?.headersSent) {
    const json = JSON.stringify(body);
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(json)}\r\nConnection: close\r\n\r\n${json}`,
    );
  }
  socket.destroy();
}
