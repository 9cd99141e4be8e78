import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { fetchImage, type UrlPolicy } from '../../services/pre/image-source.js';
import { isPublicAddress } from '../../services/pre/url-guard.js';
import { PipelineError } from '../../shared/errors.js';

void test('isPublicAddress refuses loopback, private, link-local, metadata and reserved ranges', () => {
  for (const a of [
    '127.0.0.1',
    '127.255.0.9',
    '10.1.2.3',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '0.0.0.0',
    '224.0.0.1',
    '255.255.255.255',
    '::1',
    '::',
    'fe80::1',
    'fd00:ec2::254',
    'fc00::1',
    '::ffff:127.0.0.1',
    '::ffff:10.0.0.1',
    'not-an-ip',
  ]) {
    assert.equal(isPublicAddress(a), false, a);
  }
  for (const a of [
    '8.8.8.8',
    '1.1.1.1',
    '172.32.0.1',
    '93.184.216.34',
    '2606:4700:4700::1111',
    '::ffff:8.8.8.8',
  ]) {
    assert.equal(isPublicAddress(a), true, a);
  }
});

let server: Server;
let base: string;
let hits = 0;

before(async () => {
  server = createServer((req, res) => {
    hits++;
    const url = req.url ?? '';
    if (url === '/ok') return void res.writeHead(200).end(Buffer.from('image-bytes'));
    if (url === '/big') return void res.writeHead(200).end(Buffer.alloc(5000, 1));
    if (url === '/loop') return void res.writeHead(302, { location: '/loop' }).end();
    if (url.startsWith('/hop')) {
      const n = Number(url.slice(4));
      return void res.writeHead(301, { location: n > 1 ? `/hop${n - 1}` : '/ok' }).end();
    }
    if (url === '/ftp') return void res.writeHead(302, { location: 'ftp://example.com/x' }).end();
    if (url === '/hang') return; // never answers
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

const policy: UrlPolicy = {
  allowPrivate: true,
  maxBytes: 1000,
  connectTimeoutMs: 1000,
  maxRedirects: 3,
};
const soon = () => Date.now() + 2000;

async function fetchError(url: string, p: UrlPolicy = policy, deadline = soon()): Promise<string> {
  try {
    await fetchImage(url, deadline, p);
  } catch (err) {
    assert.ok(err instanceof PipelineError, String(err));
    return `${err.code}: ${err.message}`;
  }
  assert.fail(`${url} was fetched`);
}

void test('fetchImage gets the bytes, following a few redirects', async () => {
  assert.equal((await fetchImage(`${base}/ok`, soon(), policy)).toString(), 'image-bytes');
  assert.equal((await fetchImage(`${base}/hop3`, soon(), policy)).toString(), 'image-bytes');
});

void test('fetchImage enforces the address policy, redirect and size limits, and the deadline', async () => {
  const before = hits;
  assert.match(
    await fetchError(`${base}/ok`, { ...policy, allowPrivate: false }),
    /^IMAGE_FETCH_FAILED: .*private, loopback/,
  );
  assert.equal(hits, before, 'no connection was made to a refused address');
  assert.match(await fetchError(`${base}/loop`), /more than 3 redirects/);
  assert.match(await fetchError(`${base}/hop5`), /more than 3 redirects/);
  assert.match(await fetchError(`${base}/big`), /larger than 1000 bytes/);
  assert.match(await fetchError(`${base}/ftp`), /only http and https/);
  assert.match(await fetchError(`${base}/missing`), /HTTP 404/);
  const started = Date.now();
  assert.match(await fetchError(`${base}/hang`, policy, Date.now() + 300), /deadline/);
  assert.ok(Date.now() - started < 2000);
});
