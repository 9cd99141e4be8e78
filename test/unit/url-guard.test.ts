import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, LookupFunction } from 'node:net';
import { after, before, test } from 'node:test';
import {
  fetchImage,
  guardedLookup,
  type Resolver,
  type UrlPolicy,
} from '../../services/pre/image-source.js';
import { isPublicAddress } from '../../shared/url-guard.js';
import { PipelineError } from '../../shared/errors.js';

/** Addresses no image URL may reach, each in the notation a client might use. */
const REFUSED: ReadonlyArray<[string, string]> = [
  // IPv4, dotted and in the other notations inet_aton (and ipaddr.js) read.
  ['127.0.0.1', 'loopback'],
  ['127.255.0.9', 'loopback'],
  ['2130706433', 'loopback, one decimal number'],
  ['0x7f000001', 'loopback, one hex number'],
  ['0x7f.1', 'loopback, hex and short'],
  ['0177.0.0.1', 'loopback, octal'],
  ['127.1', 'loopback, short'],
  ['127.0.1', 'loopback, three parts'],
  ['10.1.2.3', 'private'],
  ['012.1.2.3', 'private, octal'],
  ['172.16.0.1', 'private'],
  ['172.31.255.255', 'private'],
  ['192.168.1.1', 'private'],
  ['169.254.169.254', 'link-local, cloud metadata'],
  ['100.64.0.1', 'carrier-grade NAT'],
  ['100.127.255.254', 'carrier-grade NAT'],
  ['0.0.0.0', 'unspecified'],
  ['0.1.2.3', 'this network'],
  ['0', 'unspecified, one number'],
  ['224.0.0.1', 'multicast'],
  ['239.255.255.250', 'multicast'],
  ['255.255.255.255', 'broadcast'],
  ['240.0.0.1', 'reserved 240/4'],
  ['192.0.0.8', 'IETF protocol assignments'],
  ['192.0.2.1', 'documentation TEST-NET-1'],
  ['198.51.100.7', 'documentation TEST-NET-2'],
  ['203.0.113.9', 'documentation TEST-NET-3'],
  ['198.18.0.1', 'benchmarking'],
  ['198.19.255.1', 'benchmarking'],
  ['192.88.99.1', '6to4 relay anycast'],
  // IPv6 special ranges.
  ['::1', 'loopback'],
  ['0:0:0:0:0:0:0:1', 'loopback, long form'],
  ['::', 'unspecified'],
  ['fe80::1', 'link-local'],
  ['fe80::1%eth0', 'link-local with a zone id'],
  ['fe80::1%25eth0', 'link-local with a URL-escaped zone id'],
  ['fec0::1', 'site-local (deprecated)'],
  ['fc00::1', 'unique local'],
  ['fd00:ec2::254', 'unique local, AWS metadata'],
  ['ff02::1', 'multicast'],
  ['ff0e::1', 'multicast, global scope'],
  ['100::1', 'discard'],
  ['2001:db8::1', 'documentation'],
  ['3fff::1', 'documentation (RFC 9637)'],
  ['2001:2::1', 'benchmarking'],
  ['2001:10::1', 'ORCHID'],
  ['2001:20::1', 'ORCHIDv2'],
  ['5f00::1', 'segment routing'],
  ['4000::1', 'outside 2000::/3'],
  ['::2', 'IPv4-compatible range, not global'],
  // IPv6 forms that carry a refused IPv4 address.
  ['::ffff:127.0.0.1', 'IPv4-mapped loopback, dotted'],
  ['::ffff:7f00:1', 'IPv4-mapped loopback, hex'],
  ['::ffff:10.0.0.1', 'IPv4-mapped private'],
  ['::ffff:169.254.169.254', 'IPv4-mapped metadata'],
  ['0:0:0:0:0:ffff:7f00:1', 'IPv4-mapped loopback, long form'],
  ['::7f00:1', 'IPv4-compatible loopback'],
  ['::127.0.0.1', 'IPv4-compatible loopback, dotted'],
  ['::8.8.8.8', 'IPv4-compatible (deprecated), even of a public address'],
  ['::ffff:0:8.8.8.8', 'IPv4-translated (RFC 6145)'],
  ['2002:7f00:1::1', '6to4 of 127.0.0.1'],
  ['2002:a00:1::', '6to4 of 10.0.0.1'],
  ['2002:a9fe:a9fe::1', '6to4 of 169.254.169.254'],
  ['64:ff9b::7f00:1', 'NAT64 of 127.0.0.1'],
  ['64:ff9b::10.0.0.1', 'NAT64 of 10.0.0.1, dotted'],
  ['64:ff9b:1::1', 'local-use NAT64'],
  ['64:ff9b:1:7f00:1::', 'local-use NAT64 carrying 127.0.0.1'],
  ['2001:0:4136:e378:8000:63bf:80ff:fffe', 'Teredo, client 127.0.0.1'],
  ['2001:0:a00:1:8000:63bf:f7f7:f7f7', 'Teredo, server 10.0.0.1'],
  ['2001::1', 'Teredo, server 0.0.0.0'],
  // Not addresses at all.
  ['not-an-ip', 'a name'],
  ['', 'empty'],
  ['127.0.0.1.', 'trailing dot'],
  ['1.2.3.4.5', 'five parts'],
];

/** Public internet addresses, including translations that reach one. */
const ALLOWED: ReadonlyArray<[string, string]> = [
  ['8.8.8.8', 'public'],
  ['1.1.1.1', 'public'],
  ['172.32.0.1', 'just past 172.16/12'],
  ['100.128.0.1', 'just past 100.64/10'],
  ['198.20.0.1', 'just past 198.18/15'],
  ['93.184.216.34', 'public'],
  ['134744072', '8.8.8.8 as one number'],
  ['2606:4700:4700::1111', 'public IPv6'],
  ['2a00:1450:4001:82a::200e', 'public IPv6'],
  ['::ffff:8.8.8.8', 'IPv4-mapped public'],
  ['::ffff:808:808', 'IPv4-mapped public, hex'],
  ['64:ff9b::8.8.8.8', 'NAT64 of a public address (DNS64 networks)'],
  ['2002:808:808::1', '6to4 of a public address'],
  ['2001:0:4136:e378:8000:63bf:f7f7:f7f7', 'Teredo, public server and client 8.8.8.8'],
];

void test('isPublicAddress refuses every address that is not global unicast, in any notation', () => {
  const wrong = REFUSED.filter(([a]) => isPublicAddress(a)).map(([a, why]) => `${a} (${why})`);
  assert.deepEqual(wrong, [], 'these were let through');
});

void test('isPublicAddress lets public addresses through, translations of them included', () => {
  const wrong = ALLOWED.filter(([a]) => !isPublicAddress(a)).map(([a, why]) => `${a} (${why})`);
  assert.deepEqual(wrong, [], 'these were refused');
});

/** A resolver that answers every name with these addresses, like a DNS record set. */
const resolvesTo =
  (...addresses: string[]): Resolver =>
  (_hostname, _options, callback) =>
    callback(
      null,
      addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })),
    );

function lookupOnce(
  lookup: LookupFunction,
  all: boolean,
): Promise<{ err: unknown; address: unknown; family: unknown }> {
  return new Promise((resolve) =>
    lookup('images.example', { all }, (err, address, family) => resolve({ err, address, family })),
  );
}

void test('guardedLookup hands out only public addresses, and fails when none is left', async () => {
  const mixed = guardedLookup(false, resolvesTo('10.0.0.7', '2002:7f00:1::1', '93.184.216.34'));
  assert.deepEqual(await lookupOnce(mixed, false), {
    err: null,
    address: '93.184.216.34',
    family: 4,
  });
  assert.deepEqual((await lookupOnce(mixed, true)).address, [
    { address: '93.184.216.34', family: 4 },
  ]);
  for (const inward of [
    ['127.0.0.1'],
    ['::1', '::ffff:127.0.0.1'],
    ['fec0::1', '64:ff9b:1::1', '::7f00:1'],
    ['169.254.169.254'],
  ]) {
    const { err } = await lookupOnce(guardedLookup(false, resolvesTo(...inward)), false);
    assert.ok(err instanceof PipelineError, inward.join());
    assert.equal(err.code, 'IMAGE_FETCH_FAILED');
    assert.match(err.message, /images\.example .*private, loopback or link-local/);
  }
  // ALLOW_PRIVATE_URLS: everything the resolver says.
  const open = guardedLookup(true, resolvesTo('127.0.0.1'));
  assert.equal((await lookupOnce(open, false)).address, '127.0.0.1');
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
  // The loopback server, reached by every notation of a loopback address a URL can hold: all
  // refused before connecting (names through the lookup, literals before it).
  const port = new URL(base).port;
  for (const host of [
    '127.0.0.1',
    '2130706433',
    '0x7f000001',
    '0x7f.1',
    '0177.0.0.1',
    '127.1',
    '127.000.000.001',
    '[::1]',
    '[0:0:0:0:0:0:0:1]',
    '[::ffff:127.0.0.1]',
    '[::ffff:7f00:1]',
    '[::7f00:1]',
    '[::127.0.0.1]',
    '[2002:7f00:1::1]',
    '[64:ff9b::7f00:1]',
    'localhost',
    'LOCALHOST',
  ]) {
    const url = `http://${host}:${port}/ok`;
    assert.match(
      await fetchError(url, { ...policy, allowPrivate: false }),
      /^IMAGE_FETCH_FAILED: .*private, loopback or link-local/,
      url,
    );
  }
  assert.equal(hits, before, 'no connection was made to a refused address');
  // A zone id is not valid in a URL's host; it is refused as a URL, not fetched.
  assert.match(
    await fetchError(`http://[fe80::1%25lo]:${port}/ok`, { ...policy, allowPrivate: false }),
    /^IMAGE_FETCH_FAILED: .*not a valid URL/,
  );
  assert.match(await fetchError(`${base}/loop`), /more than 3 redirects/);
  assert.match(await fetchError(`${base}/hop5`), /more than 3 redirects/);
  assert.match(await fetchError(`${base}/big`), /larger than 1000 bytes/);
  assert.match(await fetchError(`${base}/ftp`), /only http and https/);
  assert.match(await fetchError(`${base}/missing`), /HTTP 404/);
  const started = Date.now();
  assert.match(await fetchError(`${base}/hang`, policy, Date.now() + 300), /deadline/);
  assert.ok(Date.now() - started < 2000);
});
