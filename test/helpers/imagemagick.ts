import { execFileSync, spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';
import { inCi } from './shared-data.js';

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
  if (inCi()) throw new Error(`${missing} is missing, and CI needs it`);
  t.skip(`${missing} is not installed on this machine`);
  return null;
}

/** Runs ImageMagick with these arguments; `-` as output writes to the returned buffer. */
export function magick(bin: string, args: readonly string[], input?: Buffer): Buffer {
  return execFileSync(bin, args, { input, maxBuffer: 256 * 1024 * 1024, timeout: 60_000 });
}

/**
 * CMYK JPEGs of RGB pixels (width × height × 3) as Pillow writes them (`convert('CMYK')`:
 * C = 255 − R, M = 255 − G, Y = 255 − B, K = 0; Adobe-inverted with an APP14 marker) and as
 * ImageMagick's `-colorspace CMYK` does (black taken out), both without a colour profile,
 * quality 95.
 */
export function cmykJpegs(
  bin: string,
  rgb: Buffer,
  width: number,
  height: number,
): Array<[style: string, jpeg: Buffer]> {
  const ink = Buffer.alloc(width * height * 4);
  for (let i = 0, o = 0; i < rgb.length; i += 3, o += 4)
    ink.set([255 - rgb[i]!, 255 - rgb[i + 1]!, 255 - rgb[i + 2]!, 0], o);
  const size = `${width}x${height}`;
  const png = magick(bin, ['-size', size, '-depth', '8', 'rgb:-', 'png:-'], rgb);
  const jpeg = ['-quality', '95', 'jpeg:-'];
  return [
    ['Pillow-style', magick(bin, ['-size', size, '-depth', '8', 'cmyk:-', ...jpeg], ink)],
    ['ImageMagick -colorspace CMYK', magick(bin, ['png:-', '-colorspace', 'CMYK', ...jpeg], png)],
  ];
}
