/**
 * Writes the tiny deterministic detector to a file, for people who want to inspect it (Netron,
 * onnx.checker) or point a config at it explicitly. The server builds it in memory by default.
 *
 *   tsx services/infer/tiny-model/cli.ts <out.onnx> [--size N]
 *   npm run make-tiny-model -- <out.onnx> [--size N]
 */
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { buildTinyDetector, TINY_DEFAULT_INPUT_SIZE } from './tiny-model.js';

const USAGE = 'usage: tsx services/infer/tiny-model/cli.ts <out.onnx> [--size N]';

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { size: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (parsed.values.help) {
    console.log(USAGE);
    return 0;
  }
  const [out, ...extra] = parsed.positionals;
  if (out === undefined || extra.length > 0) {
    console.error(USAGE);
    return 2;
  }
  const sizeText = parsed.values.size ?? String(TINY_DEFAULT_INPUT_SIZE);
  const size = /^\d+$/.test(sizeText) ? Number(sizeText) : NaN;
  let bytes: Uint8Array;
  try {
    bytes = buildTinyDetector({ inputSize: size });
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  await writeFile(out, bytes);
  console.log(`wrote ${out} (${bytes.length} bytes, input ['batch', 3, ${size}, ${size}])`);
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
