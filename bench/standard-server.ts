import Fastify from 'fastify';
import { ErrorCode, HTTP_STATUS, PipelineError } from '../shared/errors.js';
import { parseJsonRequest, parseQueryRequest, resolveParams } from '../services/gateway/request.js';
import { loadInlineDetector } from './inline-detector.js';

/**
 * The "standard deployment" the benchmark compares the pipeline with: one Node process with
 * fastify that decodes, infers (batch of one) and post-processes each request inline, with no
 * queues, on the same route and request forms as the gateway.
 *
 * Usage: tsx bench/standard-server.ts <port> [modelPath]. Prints "listening <port>" when ready.
 */
const port = Number(process.argv[2] ?? 0);
const modelPath = process.argv[3] || undefined;
const detector = await loadInlineDetector(modelPath, 1);

const app = Fastify({ bodyLimit: 16 * 1024 * 1024 });
app.addContentTypeParser(
  /^(image\/.+|application\/octet-stream)$/,
  { parseAs: 'buffer' },
  (_req, body, done) => done(null, body),
);
app.setErrorHandler((err, _req, reply) => {
  const code = err instanceof PipelineError ? err.code : ErrorCode.INTERNAL;
  const message = err instanceof Error ? err.message : String(err);
  void reply.status(HTTP_STATUS[code]).send({ code, message });
});
app.post('/infer/object_detection', async (req) => {
  const receivedAt = Date.now();
  const parsed = Buffer.isBuffer(req.body)
    ? parseQueryRequest(req.query as Record<string, unknown>, req.body)
    : parseJsonRequest(req.body, 16);
  const responses = [];
  for (const image of parsed.images) {
    if (image.kind !== 'bytes')
      throw new PipelineError(ErrorCode.INVALID_REQUEST, 'this server takes image bytes only');
    const pre = await detector.pre(image.bytes);
    const params = resolveParams(parsed.params, undefined);
    const [candidates] = await detector.infer([pre], [params]);
    responses.push(detector.post(candidates!, params, pre.letterbox, receivedAt));
  }
  return parsed.isList ? responses : responses[0];
});

const address = await app.listen({ port, host: '127.0.0.1' });
process.stdout.write(`listening ${new URL(address).port}\n`);
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    void app
      .close()
      .then(() => detector.close())
      .then(() => process.exit(0));
  });
}
