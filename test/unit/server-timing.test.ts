import assert from 'node:assert/strict';
import { test } from 'node:test';
import { serverTiming } from '../../services/gateway/server-timing.js';

test('Server-Timing lists each queue wait and stage from the marks, in order', () => {
  const header = serverTiming(
    1000,
    {
      preStart: 1002,
      preEnd: 1009.6,
      inferStart: 1020,
      inferEnd: 1050,
      postStart: 1051,
      postEnd: 1052,
    },
    1060,
  );
  assert.equal(
    header,
    'pre-queue;dur=2.0, pre;dur=7.6, infer-queue;dur=10.4, infer;dur=30.0, post-queue;dur=1.0, post;dur=1.0, total;dur=60.0',
  );
});

test('missing marks leave their entries out; clock skew never gives a negative duration', () => {
  assert.equal(serverTiming(1000, { preStart: 999 }, 1005), 'pre-queue;dur=0.0, total;dur=5.0');
});
