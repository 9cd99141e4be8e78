import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { boxColour } from '../../shared/palette.js';
import { drawImage } from '../helpers/images.js';
import { requireShared, sharedPath } from '../helpers/shared-data.js';
import { suiteRedis, type Stack } from '../helpers/stack.js';

/**
 * The demo page at `/` in a real headless browser (Debian's chromium driven by playwright-core):
 * upload a photo, and the page draws the boxes over it, lists the predictions, shows the JSON
 * and the stage times. Screenshots go to test-results/.
 */
const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const RESULTS = new URL('../../test-results/', import.meta.url);

const suite = suiteRedis();
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function serve(env: Record<string, string>): Promise<Stack> {
  return suite.stack({ env });
}

/** A fresh browser with a new, empty profile; page errors are collected. */
async function openPage(url: string): Promise<{ page: Page; errors: string[] }> {
  const profile = mkdtempSync(join(tmpdir(), 'sd-chromium-'));
  const context: BrowserContext = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1440, height: 1000 },
  });
  cleanups.push(async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(msg.text());
  });
  const res = await page.goto(url);
  assert.equal(res?.status(), 200);
  assert.match(res?.headers()['content-type'] ?? '', /text\/html/);
  return { page, errors };
}

async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(RESULTS, { recursive: true });
  await page.screenshot({ path: new URL(name, RESULTS).pathname, fullPage: true });
}

interface ShownPrediction {
  x: number;
  y: number;
  width: number;
  height: number;
  class: string;
  class_id: number;
}

// Code run in the page is given as text: the tests are type-checked without the DOM library.

/** The canvas's RGB at each point. */
async function canvasPixels(page: Page, points: Array<[number, number]>): Promise<number[][]> {
  return page.evaluate<number[][]>(`(() => {
    const ctx = document.getElementById('canvas').getContext('2d');
    return ${JSON.stringify(points)}.map(([x, y]) =>
      Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3)));
  })()`);
}

/** The `data-<name>` attribute of every element matching `selector`. */
async function dataOf(page: Page, selector: string, name: string): Promise<Array<string | null>> {
  const items = await page.locator(selector).all();
  return Promise.all(items.map((item) => item.getAttribute(`data-${name}`)));
}

const modelsListed = "document.querySelectorAll('#model option').length > 0";

function hex(colour: string): number[] {
  const n = parseInt(colour.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/** Points along the middle of a box's top and bottom edges, where its outline is drawn. */
function edgePoints(p: ShownPrediction): Array<[number, number]> {
  const points: Array<[number, number]> = [];
  for (const f of [0.3, 0.4, 0.5, 0.6, 0.7]) {
    const x = Math.round(p.x - p.width / 2 + f * p.width);
    points.push([x, Math.round(p.y - p.height / 2)], [x, Math.round(p.y + p.height / 2) - 1]);
  }
  return points;
}

async function assertOutlined(page: Page, p: ShownPrediction): Promise<void> {
  const want = hex(boxColour(p.class_id));
  const pixels = await canvasPixels(page, edgePoints(p));
  const matching = pixels.filter((px) => px.every((v, i) => Math.abs(v - want[i]!) <= 8));
  assert.ok(
    matching.length >= 6,
    `${p.class} outline: ${JSON.stringify(pixels)} (want ${boxColour(p.class_id)})`,
  );
}

describe('demo page', () => {
  test('shows the bus and the people of bus.jpg, drawn over the photo, with stage times', async (t) => {
    if (!requireShared(t, 'models/yolov8n-dynamic.onnx')) return;
    if (!requireShared(t, 'data/samples/bus.jpg')) return;
    const stack = await serve({ MODEL_PATH: sharedPath('models/yolov8n-dynamic.onnx') });
    const { page, errors } = await openPage(`${stack.url}/`);
    assert.equal(await page.isVisible('#api-key-field'), false);
    await page.waitForFunction(modelsListed);
    assert.equal(await page.inputValue('#model'), 'yolov8n-dynamic');

    await page.setInputFiles('#file', sharedPath('data/samples/bus.jpg'));
    await page.waitForSelector('#predictions li', { timeout: 60_000 });
    await page.waitForSelector('#status:has-text("found in bus.jpg")');

    const classes = await dataOf(page, '#predictions li', 'class');
    assert.equal(classes.filter((c) => c === 'bus').length, 1, classes.join(','));
    assert.ok(classes.filter((c) => c === 'person').length >= 3, classes.join(','));

    const shown = JSON.parse((await page.textContent('#json')) ?? '') as {
      image: { width: number; height: number };
      predictions: ShownPrediction[];
    };
    assert.deepEqual(shown.image, { width: 810, height: 1080 });
    const size = [
      await page.getAttribute('#canvas', 'width'),
      await page.getAttribute('#canvas', 'height'),
    ];
    // The canvas holds the photo at its own size (CSS scales it on screen).
    assert.deepEqual(size.map(Number), [810, 1080]);
    // The boxes are drawn: their outlines are on the canvas in their class colours.
    await assertOutlined(
      page,
      shown.predictions.find((p) => p.class === 'bus')!,
    );
    const tallest = shown.predictions
      .filter((p) => p.class === 'person')
      .sort((a, b) => b.height - a.height)[0]!;
    await assertOutlined(page, tallest);

    // Stage times from the Server-Timing header, one row per stage.
    assert.equal(await page.isVisible('#timings'), true);
    const stages = await dataOf(page, '#timings tr', 'stage');
    for (const stage of ['pre', 'infer', 'post', 'total'])
      assert.ok(stages.includes(stage), `stage rows: ${stages.join(',')}`);
    assert.deepEqual(errors, []);
    await screenshot(page, 'demo-page.png');
  });

  test('asks for the API key when the server requires one, then works with it', async () => {
    const stack = await serve({ API_KEYS: 'demo-secret' });
    const { page } = await openPage(`${stack.url}/`);
    assert.equal(await page.isVisible('#api-key-field'), true);
    await page.waitForSelector('#status:has-text("API key")');
    assert.equal(await page.locator('#model option').count(), 0);

    await page.fill('#api-key', 'demo-secret');
    await page.dispatchEvent('#api-key', 'change');
    await page.waitForFunction(modelsListed);
    assert.equal(await page.inputValue('#model'), 'tiny-shapes');

    const image = await drawImage(400, 300, [{ colour: 'red', x: 60, y: 50, w: 150, h: 100 }]);
    await page.setInputFiles('#file', { name: 'shapes.png', mimeType: 'image/png', buffer: image });
    await page.waitForSelector('#predictions li[data-class="red"]', { timeout: 30_000 });
    const shown = JSON.parse((await page.textContent('#json')) ?? '') as {
      predictions: ShownPrediction[];
    };
    await assertOutlined(page, shown.predictions[0]!);
    await screenshot(page, 'demo-page-api-key.png');
  });

  test('submits asynchronously, shows the status, then draws the result', async () => {
    const stack = await serve({});
    const { page, errors } = await openPage(`${stack.url}/`);
    await page.waitForFunction(modelsListed);
    await page.check('#async');
    const image = await drawImage(400, 300, [{ colour: 'blue', x: 100, y: 80, w: 120, h: 90 }]);
    await page.setInputFiles('#file', { name: 'async.png', mimeType: 'image/png', buffer: image });
    await page.waitForSelector('#predictions li[data-class="blue"]', { timeout: 30_000 });
    await page.waitForSelector('#status:has-text("found in async.png")');
    // The page went through the asynchronous route and polled its status until completed.
    const id = await page.getAttribute('#status', 'data-async-id');
    assert.match(id ?? '', /^[0-9a-f-]{36}$/);
    assert.equal(await page.getAttribute('#status', 'data-async-status'), 'completed');
    const status = (await (await fetch(`${stack.url}/async/${id}`)).json()) as {
      status: string;
      result: { predictions: ShownPrediction[] };
    };
    assert.equal(status.status, 'completed');
    const shown = JSON.parse((await page.textContent('#json')) ?? '') as {
      predictions: ShownPrediction[];
    };
    assert.deepEqual(shown, status.result, 'the page shows the result of the status document');
    await assertOutlined(page, shown.predictions[0]!);
    assert.equal(await page.isVisible('#timings'), false);
    assert.deepEqual(errors, []);
    await screenshot(page, 'demo-page-async.png');
  });
});
