import { execFileSync, spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';

/**
 * ImageMagick, for test images that sharp cannot write (CMYK JPEGs as Pillow and ImageMagick
 * make them, HEIC). Debian's `imagemagick` package; .ci/run installs it. A `convert` that is not
 * ImageMagick (a stand-in earlier on PATH) is passed over.
 */
let found: string | null | undefined;

function findImageMagick(): string | null {
  for (const bin of ['magick', 'convert', '/usr/bin/convert', '/usr/local/bin/magick']) {
    const probe = spawnSync(bin, ['-version'], { encoding: 'utf8', timeout: 10_000 });
    if (probe.status === 0 && /^Version: ImageMagick/m.test(probe.stdout)) return bin;
  }
  return null;
}

/**
 * The ImageMagick command, or null after skipping the test (failing it under CI) when ImageMagick
 * is not installed, or cannot write `format` when one is given.
 */
export function requireImageMagick(t: TestContext, format?: string): string | null {
  found ??= findImageMagick();
  let missing = found === null ? 'ImageMagick (apt-get install imagemagick)' : undefined;
  if (found && format) {
    const formats = execFileSync(found, ['-list', 'format'], { encoding: 'utf8' });
    const line = formats.split('\n').find((l) => l.trim().split(/\*?\s+/)[0] === format);
    if (!line || !/\srw/.test(line)) missing = `ImageMagick that writes ${format}`;
  }
  if (!missing) return found;
  if (process.env['CI'] === 'true') throw new Error(`${missing} is missing, and CI needs it`);
  t.skip(`${missing} is not installed on this machine`);
  return null;
}

/** Runs ImageMagick with these arguments; `-` as output writes to the returned buffer. */
export function magick(bin: string, args: readonly string[], input?: Buffer): Buffer {
  return execFileSync(bin, args, { input, maxBuffer: 256 * 1024 * 1024, timeout: 60_000 });
}
