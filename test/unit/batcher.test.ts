import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { BatchScheduler } from '../../services/infer/batcher.js';

interface Item {
  id: number;
  /** Epoch ms. */
  deadline: number;
}

type Settled = { ok: true; value: string } | { ok: false; error: unknown };

interface RunCall {
  ids: number[];
  resolve: (outputs: string[]) => void;
  reject: (err: unknown) => void;
}

class ExpiredError extends Error {
  constructor(readonly id: number) {
    super(`item ${id} expired`);
  }
}

/** A batcher whose runs stay pending until the test settles them. */
function harness(maxBatchSize: number, maxDelayMs: number) {
  const calls: RunCall[] = [];
  // One lane: dynamic batching for one model.
  const batcher = new BatchScheduler<Item, string>({
    laneOf: () => '',
    maxBatchOf: () => maxBatchSize,
    maxDelayMs,
    run: (_lane, items) =>
      new Promise<string[]>((resolve, reject) => {
        calls.push({ ids: items.map((i) => i.id), resolve, reject });
      }),
    deadlineOf: (item) => item.deadline,
    expiredError: (item) => new ExpiredError(item.id),
  });
  /** Submits an item and captures its outcome at once, so no rejection goes unhandled. */
  const submit = (id: number, deadline = Date.now() + 60_000): Promise<Settled> =>
    batcher.submit({ id, deadline }).then(
      (value): Settled => ({ ok: true, value }),
      (error: unknown): Settled => ({ ok: false, error }),
    );
  /** Resolves run call `i` with one output per item, `out-<id>`. */
  const finish = (i: number): void => {
    const call = calls[i];
    assert.ok(call, `run call ${i} has not happened`);
    call.resolve(call.ids.map((id) => `out-${id}`));
  };
  return { batcher, calls, submit, finish };
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(1);
  }
}

function value(s: Settled): string {
  assert.ok(s.ok, `expected success, got ${s.ok ? '' : String(s.error)}`);
  return s.value;
}

function error(s: Settled): unknown {
  assert.ok(!s.ok, `expected a rejection, got ${s.ok ? s.value : ''}`);
  return s.error;
}

void test('Batcher: an image that finds the model idle runs at once, alone', async () => {
  const { batcher, calls, submit, finish } = harness(8, 60_000);
  const a = submit(1);
  assert.equal(calls.length, 1);
  assert.deepEqual(calls[0]!.ids, [1]);
  assert.equal(batcher.waiting, 0);
  finish(0);
  assert.equal(value(await a), 'out-1');
  batcher.close();
});

void test('Batcher: a batch that fills while the model is busy runs when the run ends, before the delay', async () => {
  const { batcher, calls, submit, finish } = harness(3, 60_000);
  const blocker = submit(0);
  const a = submit(1);
  const b = submit(2);
  assert.equal(batcher.waiting, 2);
  const c = submit(3);
  assert.equal(calls.length, 1);
  finish(0);
  await waitFor(() => calls.length === 2, 'the full batch');
  assert.deepEqual(calls[1]!.ids, [1, 2, 3]);
  assert.equal(batcher.waiting, 0);
  finish(1);
  assert.equal(value(await blocker), 'out-0');
  assert.deepEqual((await Promise.all([a, b, c])).map(value), ['out-1', 'out-2', 'out-3']);
  batcher.close();
});

void test('Batcher: a partial batch that arrived during a run is dispatched maxDelayMs after its first image', async () => {
  const { batcher, calls, submit, finish } = harness(8, 60);
  const blocker = submit(0);
  const a = submit(1);
  const b = submit(2);
  finish(0);
  assert.equal(value(await blocker), 'out-0');
  // The model is free, but the batch is not full and its delay has not passed.
  await sleep(10);
  assert.equal(calls.length, 1);
  await waitFor(() => calls.length === 2, 'the timed dispatch');
  assert.deepEqual(calls[1]!.ids, [1, 2]);
  finish(1);
  assert.deepEqual((await Promise.all([a, b])).map(value), ['out-1', 'out-2']);
  // Nothing else ran.
  await sleep(80);
  assert.equal(calls.length, 2);
  batcher.close();
});

void test('Batcher: one batch at a time; arrivals during a run form the next batch', async () => {
  const { batcher, calls, submit, finish } = harness(3, 10);
  const first = submit(1);
  assert.equal(calls.length, 1);
  // Arrive during the run; their timer fires while the run is still going.
  const second = [submit(2), submit(3)];
  await sleep(40);
  assert.equal(calls.length, 1, 'a second batch started while the first was running');
  assert.equal(batcher.waiting, 2);
  finish(0);
  // The overdue batch goes as soon as the first run finishes.
  await waitFor(() => calls.length === 2, 'the second batch');
  assert.deepEqual(calls[1]!.ids, [2, 3]);
  assert.equal(value(await first), 'out-1');
  finish(1);
  assert.deepEqual((await Promise.all(second)).map(value), ['out-2', 'out-3']);
  batcher.close();
});

void test('Batcher: a batch that fills during a run waits for the run promise', async () => {
  const { batcher, calls, submit, finish } = harness(2, 60_000);
  const all = [submit(1), submit(2), submit(3)];
  assert.equal(calls.length, 1);
  await sleep(10);
  assert.equal(calls.length, 1);
  finish(0);
  await waitFor(() => calls.length === 2, 'the second batch');
  assert.deepEqual(calls[1]!.ids, [2, 3]);
  finish(1);
  assert.deepEqual((await Promise.all(all)).map(value), ['out-1', 'out-2', 'out-3']);
  batcher.close();
});

void test('Batcher: more than maxBatchSize waiting splits into batches in arrival order', async () => {
  const { batcher, calls, submit, finish } = harness(2, 20);
  const results = [1, 2, 3, 4, 5, 6, 7].map((id) => submit(id));
  // The first finds the model idle and runs alone; the rest arrive during its run.
  assert.deepEqual(
    calls.map((c) => c.ids),
    [[1]],
  );
  for (let i = 0; i < 3; i++) {
    finish(i);
    await waitFor(() => calls.length === i + 2, `batch ${i + 2}`);
  }
  assert.deepEqual(
    calls.map((c) => c.ids),
    [[1], [2, 3], [4, 5], [6, 7]],
  );
  finish(3);
  assert.deepEqual(
    (await Promise.all(results)).map(value),
    [1, 2, 3, 4, 5, 6, 7].map((id) => `out-${id}`),
  );
  batcher.close();
});

void test('Batcher: expired items are rejected and never run', async () => {
  const { batcher, calls, submit, finish } = harness(3, 60_000);
  const past = Date.now() - 1000;
  const blocker = submit(0);
  const a = submit(1);
  const expired = submit(2, past);
  const c = submit(3);
  finish(0);
  await waitFor(() => calls.length === 2, 'the batch after the blocker');
  assert.deepEqual(calls[1]!.ids, [1, 3]);
  const err = error(await expired);
  assert.ok(err instanceof ExpiredError);
  assert.equal(err.id, 2);
  finish(1);
  assert.equal(value(await blocker), 'out-0');
  assert.deepEqual((await Promise.all([a, c])).map(value), ['out-1', 'out-3']);
  batcher.close();
});

void test('Batcher: a batch of only expired items never calls run', async () => {
  const { batcher, calls, submit } = harness(2, 60_000);
  const past = Date.now() - 1;
  const results = await Promise.all([submit(1, past - 10), submit(2, past - 10)]);
  assert.equal(calls.length, 0);
  assert.deepEqual(
    results.map((r) => (error(r) as ExpiredError).id),
    [1, 2],
  );
  assert.equal(batcher.waiting, 0);
  batcher.close();
});

void test('Batcher: items that expire while waiting are dropped at dispatch', async () => {
  const { batcher, calls, submit, finish } = harness(8, 30);
  const blocker = submit(0);
  const soon = submit(1, Date.now() + 2);
  const later = submit(2);
  finish(0);
  await waitFor(() => calls.length === 2, 'the timed dispatch');
  assert.deepEqual(calls[1]!.ids, [2]);
  assert.ok(error(await soon) instanceof ExpiredError);
  finish(1);
  assert.equal(value(await blocker), 'out-0');
  assert.equal(value(await later), 'out-2');
  batcher.close();
});

void test('Batcher: a run that rejects rejects all its items, and the next batch still runs', async () => {
  const { batcher, calls, submit, finish } = harness(2, 60_000);
  const blocker = submit(0);
  const failing = [submit(1), submit(2)];
  const next = [submit(3), submit(4)];
  finish(0);
  await waitFor(() => calls.length === 2, 'the failing batch');
  const boom = new Error('model crashed');
  calls[1]!.reject(boom);
  const outcomes = await Promise.all(failing);
  for (const o of outcomes) assert.equal(error(o), boom);
  await waitFor(() => calls.length === 3, 'the batch after the failure');
  assert.deepEqual(calls[2]!.ids, [3, 4]);
  finish(2);
  assert.equal(value(await blocker), 'out-0');
  assert.deepEqual((await Promise.all(next)).map(value), ['out-3', 'out-4']);
  batcher.close();
});

void test('Batcher: a run returning too few outputs rejects the extra items', async () => {
  const { batcher, calls, submit, finish } = harness(3, 60_000);
  const blocker = submit(0);
  const results = [submit(1), submit(2), submit(3)];
  finish(0);
  assert.equal(value(await blocker), 'out-0');
  await waitFor(() => calls.length === 2, 'the batch of three');
  calls[1]!.resolve(['only-one']);
  const [a, b, c] = await Promise.all(results);
  assert.equal(value(a!), 'only-one');
  for (const r of [b!, c!]) {
    const err = error(r);
    assert.ok(err instanceof Error);
    assert.match(err.message, /returned 1 outputs for 3 items/);
  }
  batcher.close();
});

void test('Batcher: close() rejects waiting items and later submits', async () => {
  const { batcher, calls, submit } = harness(5, 20);
  // Keeps the model busy, so the next two wait.
  void submit(0);
  const a = submit(1);
  const b = submit(2);
  batcher.close();
  for (const r of await Promise.all([a, b])) {
    const err = error(r);
    assert.ok(err instanceof Error);
    assert.match(err.message, /closed/);
  }
  assert.equal(batcher.waiting, 0);
  const late = error(await submit(3));
  assert.ok(late instanceof Error);
  assert.match(late.message, /closed/);
  // The cleared timer never dispatches anything.
  await sleep(40);
  assert.equal(calls.length, 1);
});

void test('Batcher: close() during a run lets it finish but starts nothing more', async () => {
  const { batcher, calls, submit, finish } = harness(2, 60_000);
  const running = submit(1);
  const waiting = [submit(2), submit(3)];
  batcher.close();
  for (const r of await Promise.all(waiting)) assert.match(String(error(r)), /closed/);
  finish(0);
  assert.equal(value(await running), 'out-1');
  await sleep(10);
  assert.equal(calls.length, 1);
});
