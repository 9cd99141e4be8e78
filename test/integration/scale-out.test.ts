import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DetectionResponse } from '../../shared/contracts.js';
import { drawImage } from '../helpers/images.js';
import { isRunning, logEvents, postJson, suiteStack, type Stack } from '../helpers/stack.js';

/**
 * Redis is the only thing the stages share: a group of `pre` and `post` processes started
 * separately (as on another machine, given the same REDIS_URL and REDIS_PREFIX) joins a
 * running stack and takes its work.
 */
let stack: Stack;

suiteStack({}, (s) => {
  stack = s;
});

test('a separately started pre/post group joins a running stack and serves it', async () => {
  const image = await drawImage(240, 180, [{ colour: 'blue', x: 30, y: 40, w: 80, h: 50 }]);
  const request = { image: { type: 'base64', value: image.toString('base64') } };
  assert.equal((await postJson(stack, '/infer/object_detection', request)).status, 200);

  // The new group joins, then the original workers leave: only the new group can serve now.
  const joined = [stack.add('pre'), stack.add('post')];
  const originals = stack.roles.filter(
    (r) => (r.role === 'pre' || r.role === 'post') && !joined.includes(r),
  );
  for (const r of joined) {
    const ready = `${r.role} worker ready`;
    for (let i = 0; i < 300 && !r.output.some((l) => l.includes(ready)); i++)
      await new Promise((res) => setTimeout(res, 100));
    assert.ok(
      r.output.some((l) => l.includes(ready)),
      `${r.role} did not start:\n${r.output.join('\n')}`,
    );
  }
  for (const r of originals) r.process.kill('SIGTERM');
  await Promise.all(
    originals.map(
      (r) => new Promise((res) => (!isRunning(r) ? res(null) : r.process.once('exit', res))),
    ),
  );

  const results = await Promise.all(
    Array.from({ length: 4 }, () => postJson(stack, '/infer/object_detection', request)),
  );
  const ids = results.map((r) => {
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(
      (r.body as DetectionResponse).predictions.map((p) => p.class),
      ['blue'],
    );
    return (r.body as DetectionResponse).inference_id;
  });
  const byJoined = (role: 'pre' | 'post', msg: string) =>
    logEvents(stack, role, msg)
      .filter((e) => joined.some((j) => j.role === role && j.process.pid === e['pid']))
      .map((e) => e['inference_id']);
  // Log lines may land a moment after the response they describe.
  const processedAll = () =>
    ids.every(
      (id) =>
        byJoined('pre', 'preprocessed').includes(id) &&
        byJoined('post', 'result sent').includes(id),
    );
  for (let i = 0; i < 50 && !processedAll(); i++) await new Promise((res) => setTimeout(res, 100));
  for (const id of ids) {
    assert.ok(byJoined('pre', 'preprocessed').includes(id), `new pre did not process ${id}`);
    assert.ok(byJoined('post', 'result sent').includes(id), `new post did not process ${id}`);
  }
});
