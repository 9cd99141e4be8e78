import type {
  AsyncAccepted,
  AsyncStatus,
  DetectionResponse,
  Prediction,
} from '../../../shared/contracts.js';
import type { ErrorBody } from '../../../shared/errors.js';
import { boxColour } from '../../../shared/palette.js';

/**
 * The demo page served at `/`: pick a model and a confidence, choose or drop an image, and see
 * the predictions drawn over it, the JSON response, and the time each stage took (from the
 * response's Server-Timing header). With "Submit asynchronously" it posts to the asynchronous
 * route instead and polls the status URL, showing the status and progress until the result
 * arrives. It calls the public API only, as any client would.
 */
function element<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from the page`);
  return el as T;
}

const ui = {
  keyField: element<HTMLLabelElement>('api-key-field'),
  key: element<HTMLInputElement>('api-key'),
  model: element<HTMLSelectElement>('model'),
  confidence: element<HTMLInputElement>('confidence'),
  confidenceValue: element<HTMLOutputElement>('confidence-value'),
  async: element<HTMLInputElement>('async'),
  drop: element<HTMLLabelElement>('drop'),
  file: element<HTMLInputElement>('file'),
  status: element<HTMLParagraphElement>('status'),
  timings: element<HTMLTableElement>('timings'),
  canvas: element<HTMLCanvasElement>('canvas'),
  predictions: element<HTMLUListElement>('predictions'),
  json: element<HTMLPreElement>('json'),
};

const KEY_STORAGE = 'staged-detect.api-key';
let current: File | null = null;
// Each run gets a number, so a slow answer to an older run cannot overwrite a newer one.
let run = 0;

function authHeaders(): Record<string, string> {
  const key = ui.key.value.trim();
  return key ? { authorization: `Bearer ${key}` } : {};
}

function setStatus(text: string, error = false): void {
  ui.status.textContent = text;
  ui.status.classList.toggle('error', error);
}

async function errorText(res: Response): Promise<string> {
  try {
    const body = (await res.json()) as ErrorBody;
    return `${body.code}: ${body.message}`;
  } catch {
    return `HTTP ${res.status}`;
  }
}

async function loadModels(): Promise<void> {
  // Every served model, loaded or not: one that is not loaded loads on its first request.
  const res = await fetch('/models', { headers: authHeaders() });
  if (res.status === 401) {
    ui.keyField.hidden = false;
    setStatus('Enter an API key to list the models.', true);
    return;
  }
  if (!res.ok) {
    setStatus(`Could not list the models: ${await errorText(res)}`, true);
    return;
  }
  const { models } = (await res.json()) as {
    models: Array<{ model_id: string; loaded: boolean }>;
  };
  const chosen = ui.model.value;
  ui.model.replaceChildren(
    ...models.map((m) => {
      const label = m.loaded ? m.model_id : `${m.model_id} (loads on first use)`;
      return new Option(label, m.model_id, false, m.model_id === chosen);
    }),
  );
  setStatus(
    models.length > 0 ? 'Choose an image.' : 'No model is served yet.',
    models.length === 0,
  );
}

async function detect(file: File): Promise<void> {
  const mine = ++run;
  setStatus(`Detecting objects in ${file.name}…`);
  ui.status.removeAttribute('data-async-id');
  const query = new URLSearchParams({ confidence: ui.confidence.value });
  if (ui.model.value) query.set('model_id', ui.model.value);
  const asynchronous = ui.async.checked;
  const route = asynchronous ? '/async/infer/object_detection' : '/infer/object_detection';
  const res = await fetch(`${route}?${query.toString()}`, {
    method: 'POST',
    headers: { 'content-type': file.type || 'application/octet-stream', ...authHeaders() },
    body: file,
  });
  if (mine !== run) return;
  if (!res.ok) {
    if (res.status === 401) ui.keyField.hidden = false;
    setStatus(await errorText(res), true);
    return;
  }
  if (asynchronous) {
    const accepted = (await res.json()) as AsyncAccepted;
    const body = await awaitResult(accepted, mine);
    if (body) await show(file, body, null, mine);
    return;
  }
  await show(file, (await res.json()) as DetectionResponse, res.headers.get('server-timing'), mine);
}

/** How often the status of an asynchronous request is polled, ms. */
const POLL_MS = 250;

/**
 * Polls an asynchronous request's status URL, showing its status and progress, until it is
 * finished: its result, or undefined (its error shown) when it failed or a newer run began.
 */
async function awaitResult(
  accepted: AsyncAccepted,
  mine: number,
): Promise<DetectionResponse | undefined> {
  ui.status.dataset['asyncId'] = accepted.inference_id;
  for (;;) {
    const res = await fetch(accepted.status_url, { headers: authHeaders() });
    if (mine !== run) return undefined;
    if (!res.ok) {
      setStatus(await errorText(res), true);
      return undefined;
    }
    const doc = (await res.json()) as AsyncStatus;
    ui.status.dataset['asyncStatus'] = doc.status;
    if (doc.status === 'failed') {
      setStatus(doc.error ? `${doc.error.code}: ${doc.error.message}` : 'failed', true);
      return undefined;
    }
    if (doc.status === 'completed' && doc.result) {
      return Array.isArray(doc.result) ? doc.result[0] : doc.result;
    }
    setStatus(
      `Asynchronous request ${doc.status}: ${doc.images_done} of ${doc.images_total} image${doc.images_total === 1 ? '' : 's'} done…`,
    );
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** Draws a response over its image, lists its predictions, the JSON and the stage times. */
async function show(
  file: File,
  body: DetectionResponse,
  serverTiming: string | null,
  mine: number,
): Promise<void> {
  // Browsers apply the EXIF orientation here, as the server does: boxes are in oriented pixels.
  const bitmap = await createImageBitmap(file, { imageOrientation: 'from-image' });
  if (mine !== run) return;
  draw(bitmap, body);
  listPredictions(body.predictions);
  showTimings(serverTiming);
  ui.json.textContent = JSON.stringify(body, null, 2);
  const n = body.predictions.length;
  setStatus(`${n} object${n === 1 ? '' : 's'} found in ${file.name}.`);
}

function draw(bitmap: ImageBitmap, body: DetectionResponse): void {
  const { width, height } = body.image;
  const canvas = ui.canvas;
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.drawImage(bitmap, 0, 0, width, height);
  const line = Math.max(2, Math.round(Math.min(width, height) / 250));
  const font = Math.max(12, Math.round(Math.min(width, height) / 40));
  ctx.lineWidth = line;
  ctx.font = `${font}px system-ui, sans-serif`;
  ctx.textBaseline = 'top';
  for (const p of body.predictions) {
    const colour = boxColour(p.class_id);
    const x = p.x - p.width / 2;
    const y = p.y - p.height / 2;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x, y, p.width, p.height);
    const label = `${p.class} ${p.confidence.toFixed(2)}`;
    const labelWidth = ctx.measureText(label).width + font * 0.5;
    const labelHeight = font * 1.3;
    const top = y - line / 2 - labelHeight >= 0 ? y - line / 2 - labelHeight : y + line / 2;
    ctx.fillStyle = colour;
    ctx.fillRect(x - line / 2, top, labelWidth, labelHeight);
    ctx.fillStyle = '#000';
    ctx.fillText(label, x - line / 2 + font * 0.25, top + font * 0.15);
  }
}

function listPredictions(predictions: readonly Prediction[]): void {
  ui.predictions.replaceChildren(
    ...predictions.map((p) => {
      const li = document.createElement('li');
      li.dataset['class'] = p.class;
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = boxColour(p.class_id);
      const name = document.createElement('span');
      name.className = 'class';
      name.textContent = p.class;
      const confidence = document.createElement('span');
      confidence.className = 'confidence';
      confidence.textContent = p.confidence.toFixed(2);
      li.append(swatch, name, confidence);
      return li;
    }),
  );
}

/** Parses `name;dur=12.3, other;dur=4` into [name, ms] pairs. */
function parseServerTiming(header: string): Array<[string, number]> {
  const entries: Array<[string, number]> = [];
  for (const part of header.split(',')) {
    const [name, ...params] = part.split(';').map((s) => s.trim());
    const dur = params.find((p) => p.startsWith('dur='));
    if (name && dur) entries.push([name, Number(dur.slice(4))]);
  }
  return entries.filter(([, ms]) => Number.isFinite(ms));
}

function showTimings(header: string | null): void {
  const entries = header ? parseServerTiming(header) : [];
  ui.timings.hidden = entries.length === 0;
  const longest = Math.max(1, ...entries.map(([, ms]) => ms));
  ui.timings.tBodies[0]!.replaceChildren(
    ...entries.map(([name, ms]) => {
      const row = document.createElement('tr');
      row.dataset['stage'] = name;
      if (name === 'total') row.className = 'total';
      const label = document.createElement('td');
      label.textContent = name;
      const value = document.createElement('td');
      value.className = 'ms';
      value.textContent = ms.toFixed(1);
      const barCell = document.createElement('td');
      const bar = document.createElement('div');
      bar.className = 'bar';
      bar.style.width = `${Math.max(1, (ms / longest) * 6)}rem`;
      barCell.append(bar);
      row.append(label, value, barCell);
      return row;
    }),
  );
}

function choose(file: File | undefined): void {
  if (!file) return;
  current = file;
  void detect(file).catch((err: unknown) => setStatus(String(err), true));
}

function start(): void {
  if (document.body.dataset['apiKey'] === 'required') ui.keyField.hidden = false;
  ui.key.value = sessionStorage.getItem(KEY_STORAGE) ?? '';
  ui.key.addEventListener('change', () => {
    sessionStorage.setItem(KEY_STORAGE, ui.key.value.trim());
    void loadModels();
  });
  ui.confidence.addEventListener('input', () => {
    ui.confidenceValue.textContent = Number(ui.confidence.value).toFixed(2);
  });
  ui.confidence.addEventListener('change', () => choose(current ?? undefined));
  ui.model.addEventListener('change', () => choose(current ?? undefined));
  ui.async.addEventListener('change', () => choose(current ?? undefined));
  ui.file.addEventListener('change', () => choose(ui.file.files?.[0]));
  ui.drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    ui.drop.classList.add('over');
  });
  ui.drop.addEventListener('dragleave', () => ui.drop.classList.remove('over'));
  ui.drop.addEventListener('drop', (e) => {
    e.preventDefault();
    ui.drop.classList.remove('over');
    choose(e.dataTransfer?.files[0]);
  });
  void loadModels().catch((err: unknown) => setStatus(String(err), true));
}

start();
