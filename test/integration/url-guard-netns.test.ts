import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * Runs test/netns/url-guard.netns.ts, which makes the server fetch image URLs, inside a new
 * network namespace with only a loopback interface (`unshare -n`, then `ip link set lo up`), so
 * a guard that let an address through reaches nothing. Skips, saying why, where namespaces
 * cannot be made (no util-linux `unshare` or iproute2 `ip`, or no permission: root, or
 * unprivileged user namespaces for `unshare -r`).
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const INNER = 'test/netns/url-guard.netns.ts';

/** unshare's arguments for a loopback-only namespace here, or why there is none. */
function namespaceArgs(): string[] | string {
  const options = process.getuid?.() === 0 ? [['-n'], ['-r', '-n']] : [['-r', '-n']];
  let why = 'unshare could not make a network namespace';
  for (const args of options) {
    const probe = spawnSync('unshare', [...args, 'ip', 'link', 'set', 'lo', 'up'], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    if (probe.status === 0) return args;
    why = probe.error
      ? `${probe.error.message} (util-linux unshare and iproute2 ip are needed)`
      : `unshare ${args.join(' ')} ip link set lo up: ${probe.stderr.trim()}`;
  }
  return why;
}

/** This environment without NODE_TEST_CONTEXT, which would make the inner runner report here. */
function innerEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env['NODE_TEST_CONTEXT'];
  return env;
}

void test('the URL guard over HTTP, in a network namespace with only loopback', async (t) => {
  const args = namespaceArgs();
  if (typeof args === 'string') return t.skip(`no network namespace on this machine: ${args}`);
  const child = spawn(
    'unshare',
    [
      ...args,
      'sh',
      '-c',
      'ip link set lo up && exec "$0" --import tsx --test --test-reporter=spec "$1"',
      process.execPath,
      INNER,
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: innerEnv() },
  );
  const output: string[] = [];
  child.stdout.on('data', (c: Buffer) => output.push(c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => output.push(c.toString('utf8')));
  const killer = setTimeout(() => child.kill('SIGKILL'), 150_000);
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  clearTimeout(killer);
  const text = output.join('');
  assert.equal(code, 0, text);
  assert.match(text, /ℹ pass 2\b/, text);
});
