import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';

/**
 * The real models and images beside the repository (../shared). Tests that need them must run
 * in CI; they skip, with a message naming what is missing, only on a machine without them and
 * without CI set (a fresh clone).
 */
export const SHARED_DIR = fileURLToPath(new URL('../../../shared/', import.meta.url));

/** `../shared/<relative>` as an absolute path. */
export function sharedPath(relative: string): string {
  return `${SHARED_DIR}${relative}`;
}

/** True under CI (`CI` set to anything but empty, `0` or `false`), where nothing may skip. */
export function inCi(): boolean {
  const ci = (process.env['CI'] ?? '').trim().toLowerCase();
  return ci !== '' && ci !== '0' && ci !== 'false';
}

/**
 * The skip message for a suite that needs these files of ../shared, or undefined when all are
 * there. Under CI a missing file throws instead, so the suite fails loudly.
 */
export function missingShared(...relatives: string[]): string | undefined {
  const missing = relatives.map(sharedPath).filter((p) => !existsSync(p));
  if (missing.length === 0) return undefined;
  const list = missing.join(', ');
  if (inCi())
    throw new Error(`${list} missing, and CI needs ${missing.length > 1 ? 'them' : 'it'}`);
  return `not available on this machine: ${list}`;
}

/** True when the file is there; skips the test (or fails it under CI) when it is not. */
export function requireShared(t: TestContext, relative: string): boolean {
  const missing = missingShared(relative);
  if (missing === undefined) return true;
  t.skip(missing);
  return false;
}
