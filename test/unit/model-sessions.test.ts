import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  describeSessions,
  OnnxModel,
  pickSession,
  sessionLayout,
} from '../../services/infer/model.js';

const base = { intraOp: 0, allowSpinning: false };

/** The generated tiny-shapes detector on the CPU, with `options` over these defaults. */
function loadTiny(options: Partial<Parameters<typeof OnnxModel.load>[0]>): Promise<OnnxModel> {
  return OnnxModel.load({
    modelId: 'tiny',
    modelPath: undefined,
    classNamesPath: undefined,
    executionProvider: 'cpu',
    maxBatchSize: 1,
    ...options,
  });
}

describe('sessionLayout: the sessions of one model and their threads', () => {
  test('one instance: one session with every core', () => {
    assert.deepEqual(sessionLayout(base, 1, 'cpu', 2), { threads: [base], solo: false });
    assert.deepEqual(sessionLayout(base, 0, 'cpu', 2), { threads: [base], solo: false });
  });

  test('several on the CPU: a solo session with every core, then the side-by-side ones', () => {
    const one = { ...base, intraOp: 1 };
    assert.deepEqual(sessionLayout(base, 2, 'cpu', 2), { threads: [base, one, one], solo: true });
    const two = { ...base, intraOp: 2 };
    assert.deepEqual(sessionLayout(base, 2, 'cpu', 4), { threads: [base, two, two], solo: true });
    // A configured thread count is what the solo session gets and the others split.
    const four = { intraOp: 4, allowSpinning: true };
    assert.deepEqual(sessionLayout(four, 4, 'cpu', 2), {
      threads: [four, ...Array.from({ length: 4 }, () => ({ ...four, intraOp: 1 }))],
      solo: true,
    });
  });

  test('no solo session when it would have no more threads than the others', () => {
    const single = { ...base, intraOp: 1 };
    assert.deepEqual(sessionLayout(single, 2, 'cpu', 8), {
      threads: [single, single],
      solo: false,
    });
  });

  test('on CUDA and TensorRT, the instances themselves: no solo session', () => {
    const one = { ...base, intraOp: 1 };
    assert.deepEqual(sessionLayout(base, 2, 'cuda', 2), { threads: [base, one], solo: false });
    assert.deepEqual(sessionLayout(base, 2, 'tensorrt', 2), { threads: [base, one], solo: false });
  });
});

describe('pickSession: where a batch runs', () => {
  test('with a solo session: it when nothing runs, else an idle side-by-side session', () => {
    assert.equal(pickSession([0, 0, 0], true), 0);
    assert.equal(pickSession([1, 0, 0], true), 1);
    assert.equal(pickSession([1, 1, 0], true), 2);
    assert.equal(pickSession([0, 1, 0], true), 2);
    // A loaded model never starts a batch on the solo session beside the others.
    assert.equal(pickSession([0, 1, 1], true), 1);
    assert.equal(pickSession([0, 2, 1], true), 2);
  });

  test('without: the first idle session, else the least busy', () => {
    assert.equal(pickSession([0, 0], false), 0);
    assert.equal(pickSession([1, 0], false), 1);
    assert.equal(pickSession([0, 1], false), 0);
    assert.equal(pickSession([2, 1], false), 1);
  });
});

describe('OnnxModel with two instances on the CPU', () => {
  test('runs batches one at a time and side by side with the same results', async () => {
    const model = await loadTiny({
      maxBatchSize: 1,
      instances: 2,
      threads: { intraOp: 2, allowSpinning: false },
    });
    try {
      assert.equal(model.sessions, 'solo 2, side by side 1 + 1');
      assert.equal(describeSessions({ threads: [base], solo: false }), 'default');
      const { input_width: width, input_height: height } = model.description;
      const pixels = new Uint8Array(width * height * 3).fill(114);
      const batch = () =>
        model.run(
          [{ pixels, placement: { width, height, left: 0, top: 0 } }],
          [{ confidence: 0.01, allowedClassIds: null, maxCandidates: 10 }],
        );
      const alone = await batch();
      const together = await Promise.all([batch(), batch(), batch()]);
      for (const out of together) assert.deepEqual(out.candidates, alone.candidates);
    } finally {
      await model.close();
    }
  });
});

describe('OnnxModel.run: pixels handed over', () => {
  test('an image alone that owns its buffer is transferred, anything else is copied', async () => {
    const model = await loadTiny({ maxBatchSize: 2 });
    try {
      const { input_width: width, input_height: height } = model.description;
      const placement = { width, height, left: 0, top: 0 };
      const filter = { confidence: 0.01, allowedClassIds: null, maxCandidates: 10 };
      const image = () => new Uint8Array(width * height * 3).fill(114);
      const kept = image();
      const expected = await model.run([{ pixels: kept, placement }], [filter]);
      assert.equal(kept.byteLength, width * height * 3, 'not handed over: copied, left intact');

      const owned = image();
      const handed = await model.run([{ pixels: owned, placement, handOver: true }], [filter]);
      assert.equal(owned.byteLength, 0, 'handed over and owning its buffer: transferred');
      assert.deepEqual(handed.candidates, expected.candidates);

      // A view into a larger buffer (a pooled or sliced Buffer) cannot be transferred alone.
      const larger = new Uint8Array(width * height * 3 + 16).fill(114);
      const view = larger.subarray(16);
      const copied = await model.run([{ pixels: view, placement, handOver: true }], [filter]);
      assert.equal(view.byteLength, width * height * 3, 'a view is copied');
      assert.deepEqual(copied.candidates, expected.candidates);

      // Two images are copied into one buffer, whatever they say.
      const a = image();
      const b = image();
      const both = await model.run(
        [
          { pixels: a, placement, handOver: true },
          { pixels: b, placement, handOver: true },
        ],
        [filter, filter],
      );
      assert.equal(a.byteLength + b.byteLength, 2 * width * height * 3, 'a batch is copied');
      assert.deepEqual(both.candidates, [expected.candidates[0], expected.candidates[0]]);
    } finally {
      await model.close();
    }
  });
});
