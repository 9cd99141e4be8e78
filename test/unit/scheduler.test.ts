import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BatchScheduler } from '../../services/infer/batcher.js';

/**
 * The scheduler between models: run slots (one by default), one lane per model, and the fairness rule (the
 * oldest waiting image first, unless another model's full batch is ready; a lane is passed
 * over at most once in a row).
 */
interface Item {
  lane: string;
  id: string;
}

interface RunCall {
  lane: string;
  ids: string[];
  resolve: () => void;
}

function harness(maxBatch: Record<string, number>, maxDelayMs: number, slots = 1) {
  const calls: RunCall[] = [];
  const scheduler = new BatchScheduler<Item, string>({
    maxDelayMs,
    slots,
    laneOf: (item) => item.lane,
    maxBatchOf: (lane) => maxBatch[lane] ?? 1,
    run: (lane, items) =>
      new Promise<string[]>((resolve) => {
        calls.push({
          lane,
          ids: items.map((i) => i.id),
          resolve: () => resolve(items.map((i) => i.id)),
        });
      }),
    deadlineOf: () => Date.now() + 60_000,
    expiredError: () => new Error('expired'),
  });
  const submit = (lane: string, id: string) => scheduler.submit({ lane, id });
  return { scheduler, calls, submit };
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(1);
  }
}

void test('scheduler: one batch at a time across models; lanes batch separately', async () => {
  const { scheduler, calls, submit } = harness({ a: 2, b: 2 }, 10);
  const results = [submit('a', 'a0'), submit('a', 'a1'), submit('b', 'b1'), submit('a', 'a2')];
  // a0 finds the model idle and runs alone; the others arrive during its run: a fills a
  // batch, b becomes due (partial) after its delay, and both wait for the slot.
  assert.equal(calls.length, 1);
  assert.deepEqual(calls[0], { ...calls[0], lane: 'a', ids: ['a0'] });
  await sleep(30);
  assert.equal(calls.length, 1, 'a second batch ran while one was on the model');
  calls[0].resolve();
  // a's full batch jumps b's older partial one once.
  await waitFor(() => calls.length === 2, 'the a batch');
  assert.deepEqual(calls[1], { ...calls[1], lane: 'a', ids: ['a1', 'a2'] });
  calls[1].resolve();
  await waitFor(() => calls.length === 3, 'the b batch');
  assert.equal(calls[2]!.lane, 'b');
  assert.deepEqual(calls[2]!.ids, ['b1']);
  calls[2]!.resolve();
  assert.deepEqual(await Promise.all(results), ['a0', 'a1', 'b1', 'a2']);
  scheduler.close();
});

void test('scheduler: the oldest image goes first unless another model has a full batch, and only once', async () => {
  const { scheduler, calls, submit } = harness({ busy: 2, quiet: 4, other: 1 }, 5);
  const all: Promise<string>[] = [];
  // Occupy the slot.
  all.push(submit('other', 'o1'));
  assert.equal(calls.length, 1);
  // The quiet model's image arrives first and becomes due (partial batch) ...
  all.push(submit('quiet', 'q1'));
  await sleep(20);
  // ... then the busy model fills two batches.
  for (const id of ['b1', 'b2', 'b3', 'b4']) all.push(submit('busy', id));
  calls[0]!.resolve();
  // A full batch of the busy model jumps the older partial batch once ...
  await waitFor(() => calls.length === 2, 'the second batch');
  assert.equal(calls[1]!.lane, 'busy');
  calls[1]!.resolve();
  // ... but not twice in a row, though another full busy batch is ready.
  await waitFor(() => calls.length === 3, 'the third batch');
  assert.equal(calls[2]!.lane, 'quiet');
  assert.deepEqual(calls[2]!.ids, ['q1']);
  calls[2]!.resolve();
  await waitFor(() => calls.length === 4, 'the fourth batch');
  assert.deepEqual(calls[3]!.ids, ['b3', 'b4']);
  calls[3]!.resolve();
  await Promise.all(all);
  scheduler.close();
});

void test('scheduler: a busy model that always has a full batch cannot starve a quiet one', async () => {
  const { scheduler, calls, submit } = harness({ busy: 4, quiet: 8 }, 2);
  let next = 0;
  const busyItems: Promise<string>[] = [];
  const feedBusy = (n: number) => {
    for (let i = 0; i < n; i++) busyItems.push(submit('busy', `b${next++}`));
  };
  // Another model occupies the slot; a full busy batch becomes due, the quiet image arrives,
  // then the busy model queues two more full batches behind it.
  const holder = submit('hold', 'h');
  feedBusy(4);
  const quiet = submit('quiet', 'q');
  feedBusy(8);
  let quietDone = false;
  void quiet.then(() => (quietDone = true));
  await sleep(10); // the quiet lane's delay passes: it is due, with the oldest waiting image
  calls[0]!.resolve();
  assert.equal(await holder, 'h');
  // Keep the busy lane full after every run.
  let runs = 1;
  while (!quietDone) {
    await waitFor(() => calls.length > runs, `run ${runs + 1}`);
    feedBusy(4);
    calls[runs]!.resolve();
    runs++;
    await sleep(5);
    assert.ok(runs <= 4, `the quiet image still waits: ${calls.map((c) => c.lane).join(',')}`);
  }
  // The oldest (full) busy batch, one full busy batch that jumped the queue once, then the
  // quiet image.
  assert.deepEqual(
    calls.slice(1, 4).map((c) => c.lane),
    ['busy', 'busy', 'quiet'],
  );
  assert.equal(await quiet, 'q');
  scheduler.close();
  for (const call of calls.slice(runs)) call.resolve();
  await Promise.allSettled(busyItems);
});

void test('scheduler: close rejects what waits in every lane', async () => {
  const { scheduler, calls, submit } = harness({ a: 1, b: 3 }, 60_000);
  const running = submit('a', 'a1');
  const waiting = [submit('b', 'b1'), submit('a', 'a2')];
  assert.equal(scheduler.waiting, 2);
  scheduler.close();
  for (const w of waiting) await assert.rejects(w, /closed/);
  await assert.rejects(submit('a', 'a3'), /closed/);
  calls[0]!.resolve();
  assert.equal(await running, 'a1');
});

void test('scheduler: with two slots (model instances) two batches run at once, never three', async () => {
  const { scheduler, calls, submit } = harness({ a: 2 }, 10, 2);
  const results = [submit('a', 'a0'), submit('a', 'a1')];
  // a0 found both slots free and runs alone; a1 arrives while one slot is still free: at once.
  assert.deepEqual(
    calls.map((c) => c.ids),
    [['a0'], ['a1']],
  );
  // Both slots busy: arrivals collect into a batch, which waits for a slot.
  results.push(submit('a', 'a2'), submit('a', 'a3'), submit('a', 'a4'));
  await sleep(30);
  assert.equal(calls.length, 2, 'a third batch ran while two were running');
  calls[1]!.resolve();
  await waitFor(() => calls.length === 3, 'the next batch in the freed slot');
  assert.deepEqual(calls[2]!.ids, ['a2', 'a3']);
  calls[0]!.resolve();
  await waitFor(() => calls.length === 4, 'the leftover in the other freed slot');
  assert.deepEqual(calls[3]!.ids, ['a4']);
  calls[2]!.resolve();
  calls[3]!.resolve();
  assert.deepEqual(await Promise.all(results), ['a0', 'a1', 'a2', 'a3', 'a4']);
  scheduler.close();
});
