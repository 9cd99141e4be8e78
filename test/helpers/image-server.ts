import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before } from 'node:test';

/**
 * A loopback HTTP server for a test file's image URLs: started before its tests, closed after
 * them. `served` maps a path to the PNG bytes answered for it; other paths are 404.
 */
export interface ImageServer {
  /** `http://127.0.0.1:<port>`, once the server listens. */
  url: string;
  served: Map<string, Buffer>;
}

export function suiteImageServer(): ImageServer {
  const handle: ImageServer = { url: '', served: new Map() };
  let server: Server | undefined;
  before(async () => {
    server = createServer((req, res) => {
      const body = handle.served.get(req.url ?? '');
      if (!body) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'image/png' }).end(body);
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    handle.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server?.close();
  });
  return handle;
}
