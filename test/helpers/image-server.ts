import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before } from 'node:test';

/**
 * A loopback HTTP server for a test file's image URLs: started before its tests, closed after
 * them. `served` maps a path to the PNG bytes answered for it; paths in `trickled` answer 200
 * and then one byte a second, never finishing; paths in `steady` send 8 KiB every 500 ms of a
 * declared 10 MB (16 KiB/s, over a minute); other paths are 404.
 */
export interface ImageServer {
  /** `http://127.0.0.1:<port>`, once the server listens. */
  url: string;
  served: Map<string, Buffer>;
  trickled: Set<string>;
  steady: Set<string>;
}

export function suiteImageServer(): ImageServer {
  const handle: ImageServer = {
    url: '',
    served: new Map(),
    trickled: new Set(),
    steady: new Set(),
  };
  const server = suiteLoopbackServer((req, res) => {
    if (handle.trickled.has(req.url ?? '')) {
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': '100000' });
      const timer = setInterval(() => res.write('x'), 1000);
      res.once('close', () => clearInterval(timer));
      return;
    }
    if (handle.steady.has(req.url ?? '')) {
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': '10000000' });
      const timer = setInterval(() => res.write(Buffer.alloc(8192)), 500);
      res.once('close', () => clearInterval(timer));
      return;
    }
    const body = handle.served.get(req.url ?? '');
    if (!body) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'image/png' }).end(body);
  });
  return Object.defineProperty(handle, 'url', { get: () => server.url });
}

/** A loopback HTTP server of a test file, by its URL. */
export interface LoopbackServer {
  /** `http://127.0.0.1:<port>`, once the server listens (in the file's `before` hook). */
  readonly url: string;
}

/**
 * Serves `handler` on 127.0.0.1 (a free port) for a test file: started before its tests,
 * closed after them, open connections included.
 */
export function suiteLoopbackServer(handler: RequestListener): LoopbackServer {
  let server: Server | undefined;
  let url = '';
  before(async () => {
    server = createServer(handler);
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server?.closeAllConnections();
    server?.close();
  });
  return {
    get url() {
      return url;
    },
  };
}

/** A loopback server whose every answer is a download that never finishes. */
export interface EndlessDownload {
  /** `http://127.0.0.1:<port>/model.onnx` */
  url: string;
  /** Requests received so far: the download has started once this is 1. */
  readonly requests: number;
  close(): void;
}

/**
 * Starts a loopback server that answers every request with 200, a declared 10 MB and then one
 * byte every 200 ms: a model (or image) download that keeps its caller waiting.
 */
export async function startEndlessDownload(): Promise<EndlessDownload> {
  let requests = 0;
  const server = createServer((_req, res) => {
    requests++;
    res.writeHead(200, { 'content-length': '10000000' });
    const timer = setInterval(() => res.write('x'), 200);
    res.once('close', () => clearInterval(timer));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/model.onnx`,
    get requests() {
      return requests;
    },
    close() {
      server.closeAllConnections();
      server.close();
    },
  };
}
