import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { freePort, freePorts } from '../../services/supervisor/processes.js';

/** Linux's first ephemeral port, or undefined elsewhere. */
function ephemeralLow(): number | undefined {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0]);
  } catch {
    return undefined;
  }
}

function listen(port: number): Promise<ReturnType<typeof createServer>> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

test('freePorts: consecutive loopback ports below the ephemeral range, each one bindable', async () => {
  const low = ephemeralLow() ?? 30_000;
  for (let i = 0; i < 20; i++) {
    const base = await freePorts(4);
    assert.ok(base >= 1024 && base + 3 < low, `${base}..${base + 3} below ${low}`);
    const servers = await Promise.all([0, 1, 2, 3].map((k) => listen(base + k)));
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
  const one = await freePort();
  assert.ok(one < low, `${one} below ${low}`);
});
