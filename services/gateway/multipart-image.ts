import type { Multipart } from '@fastify/multipart';
import type { FastifyRequest } from 'fastify';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { parseImageValue } from './request.js';

/**
 * The one image of a `multipart/form-data` request, for every route that takes one: the part
 * named `file`. Every part is read, so no input is dropped silently: a second `file` part or
 * any other file is refused, and a malformed body (no boundary, no closing boundary, bytes that
 * are no part) is a client error, not a server fault.
 */

/** Multipart options the gateway registers @fastify/multipart with, for the reader below. */
export function multipartOptions(maxBodyBytes: number) {
  return {
    // A text part's bytes decode one to one as latin1, so a `file` part sent without
    // `filename=` (which busboy hands over as a text field) keeps its bytes exactly.
    defCharset: 'latin1',
    // One file is what a route takes; a second one is reported by readMultipartImage.
    limits: { fileSize: maxBodyBytes, fieldSize: maxBodyBytes, files: 1 },
  };
}

const TOO_MANY =
  "the multipart body has more than one file: send one image per request in a part named 'file' (or a JSON body with a list of images)";

/** A multipart body: the image, and the other text parts by name (the last of a repeated one). */
export interface MultipartForm {
  image: Buffer;
  fields: Record<string, string>;
}

/**
 * Reads the request's multipart body and returns the bytes of its part named `file`. A `file`
 * part without `filename=` is accepted too: its value is the image's bytes, or the image as
 * base64 text. Other text parts are not options (those come from the query string): they are
 * returned by name, for a route to refuse what it does not take.
 *
 * @throws PipelineError INVALID_REQUEST when the body is malformed, has no `file` part, has
 *   two, or has a file under another name; PAYLOAD_TOO_LARGE when a part is over the limits of
 *   multipartOptions().
 */
export async function readMultipartForm(req: FastifyRequest): Promise<MultipartForm> {
  let image: Buffer | undefined;
  const otherParts: string[] = [];
  const fields: Record<string, string> = {};
  try {
    for await (const part of req.parts()) {
      if (part.type === 'file' && part.fieldname !== 'file') {
        await part.toBuffer();
        throw new PipelineError(
          ErrorCode.INVALID_REQUEST,
          `multipart part '${part.fieldname}' is a file, but the image must be the part named 'file'`,
        );
      }
      if (part.fieldname !== 'file') {
        otherParts.push(part.fieldname);
        if (part.type === 'field') fields[part.fieldname] = String(part.value);
        continue;
      }
      if (image !== undefined) throw new PipelineError(ErrorCode.INVALID_REQUEST, TOO_MANY);
      image = part.type === 'file' ? await part.toBuffer() : fieldBytes(part);
    }
  } catch (err) {
    throw asRequestError(err);
  }
  if (image === undefined) {
    const seen = otherParts.length > 0 ? ` (it has: ${otherParts.join(', ')})` : '';
    throw new PipelineError(
      ErrorCode.INVALID_REQUEST,
      `the multipart body has no part named 'file'${seen}`,
    );
  }
  return { image, fields };
}

/** The image of a multipart body (readMultipartForm), its other parts ignored. */
export async function readMultipartImage(req: FastifyRequest): Promise<Buffer> {
  return (await readMultipartForm(req)).image;
}

/** Bytes of a `file` part sent as a text field (no `filename=`). */
function fieldBytes(part: Extract<Multipart, { type: 'field' }>): Buffer {
  if (part.valueTruncated) {
    throw new PipelineError(ErrorCode.PAYLOAD_TOO_LARGE, "multipart part 'file' is too large");
  }
  const text = typeof part.value === 'string' ? part.value : JSON.stringify(part.value);
  // Base64 text is what Roboflow's server takes from a text `file` part; raw image bytes never
  // consist of base64 characters only (every format starts with a non-ASCII or '<' byte).
  if (/^[A-Za-z0-9+/\-_\s]+={0,2}\s*$/.test(text) || text.startsWith('data:')) {
    const parsed = parseImageValue('base64', text, "multipart part 'file'");
    if (parsed.kind === 'bytes') return parsed.bytes;
  }
  return Buffer.from(text, 'latin1');
}

/** Errors of reading a multipart body as the client errors they are. */
function asRequestError(err: unknown): unknown {
  if (err instanceof PipelineError) return err;
  if (!(err instanceof Error)) return err;
  const { code, statusCode } = err as Error & { code?: string; statusCode?: number };
  if (code === 'FST_FILES_LIMIT') return new PipelineError(ErrorCode.INVALID_REQUEST, TOO_MANY);
  if (statusCode === 413) return new PipelineError(ErrorCode.PAYLOAD_TOO_LARGE, err.message);
  // busboy's own errors (no boundary, unexpected end, malformed part header) and the plugin's
  // other 4xx errors: the body is not a multipart body this server can read.
  return new PipelineError(
    ErrorCode.INVALID_REQUEST,
    `the multipart body is malformed: ${err.message}`,
  );
}
