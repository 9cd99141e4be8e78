import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { bundleDemoPage } from './demo-bundle.js';

/**
 * The demo page at `GET /`: one HTML file with its script and style inlined. A built gateway
 * (dist/) serves the page `npm run build` wrote next to it; one run from source (tsx) builds it
 * in memory at startup. The page shows its API-key field when the server requires keys.
 */
export const DEMO_BUILT_FILE = 'index.html';

/** Registers the demo page at `/` and its bundled script. */
export async function registerDemoPage(
  app: FastifyInstance,
  opts: { apiKeyRequired: boolean },
): Promise<void> {
  const dir = fileURLToPath(new URL('./demo/', import.meta.url));
  const built = `${dir}${DEMO_BUILT_FILE}`;
  const html = existsSync(built) ? await readFile(built, 'utf8') : await bundleDemoPage(dir);
  const page = html.replace('{{API_KEY}}', opts.apiKeyRequired ? 'required' : 'off');
  app.get('/', { schema: { hide: true } }, (_req, reply) =>
    reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(page),
  );
}
