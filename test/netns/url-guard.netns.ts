import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { after, before, test } from 'node:test';
import { postJson, suiteStack, type Stack } from '../helpers/stack.js';

/**
 * The URL guard over HTTP, with real processes, inside a network namespace that has only a
 * loopback interface: run by test/integration/url-guard-netns.test.ts under `unshare -n`, never
 * on its own. A guard that let an address through could reach nothing outside this machine; the
 * loopback image server below counts every request it gets.
 */
let stack: Stack;
suiteStack({}, (s) => {
  stack = s;
});

let hits = 0;
const servers: Server[] = [];
let port = 0;

before(async () => {
  // One port on both loopback addresses, so each notation below names a listening server.
  for (const host of ['127.0.0.1', '::1']) {
    const server = createServer((_req, res) => {
      hits++;
      res.writeHead(200, { 'content-type': 'image/png' }).end(Buffer.alloc(10));
    });
    await new Promise<void>((r) => server.listen(port, host, r));
    port = (server.address() as AddressInfo).port;
    servers.push(server);
  }
});

after(() => {
  for (const s of servers) s.close();
});

void test('this namespace has only a loopback interface and no route out', async () => {
  const names = Object.keys(networkInterfaces());
  assert.deepEqual(names, ['lo'], 'interfaces');
  const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
    const socket = connect(80, '10.0.0.1');
    socket.once('error', resolve);
    socket.once('connect', () => {
      socket.destroy();
      resolve(Object.assign(new Error('connected'), { code: 'CONNECTED' }));
    });
  });
  assert.match(String(err.code), /ENETUNREACH|EHOSTUNREACH/);
});

void test('image URLs that name a non-public address, in any notation, are refused unfetched', async () => {
  const urls = [
    ...[
      '127.0.0.1',
      'localhost',
      '2130706433',
      '0x7f.1',
      '0177.0.0.1',
      '127.1',
      '[::1]',
      '[::ffff:127.0.0.1]',
      '[::ffff:7f00:1]',
      '[::7f00:1]',
      '[2002:7f00:1::1]',
      '[64:ff9b::7f00:1]',
    ].map((host) => `http://${host}:${port}/a.png`),
    'http://169.254.169.254/latest/meta-data/',
    'http://10.0.0.1/a.png',
    'http://100.64.0.1/a.png',
    'http://198.18.0.1/a.png',
    'http://[fec0::1]/a.png',
    'http://[64:ff9b:1::1]/a.png',
    'http://[fd00:ec2::254]/a.png',
    'https://[::1]/a.png',
  ];
  for (const url of urls) {
    const res = await postJson(stack, '/infer/object_detection', {
      image: { type: 'url', value: url },
    });
    const body = res.body as { code: string; message: string };
    assert.equal(res.status, 400, `${url}: ${JSON.stringify(body)}`);
    assert.equal(body.code, 'IMAGE_FETCH_FAILED', url);
    // The guard's refusal, not a connection error that a let-through address would get here.
    assert.match(body.message, /private, loopback or link-local/, url);
  }
  assert.equal(hits, 0, 'the loopback image server was never reached');
});
