import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';

/**
 * The real models and images beside the repository (../shared). Tests that need them must run
 * in CI; they skip, with a message, only on a machine without them and without CI set.
 */
export const SHARED_DIR = fileURLToPath(new URL('../../../shared/', import.meta.url));

export function sharedPath(relative: string): string {
  return `${SHARED_DIR}${relative}`;
}

/** True when the file is there; skips the test (or fails it under CI) when it is not. */
export function requireShared(t: TestContext, relative: string): boolean {
  const path = sharedPath(relative);
  if (existsSync(path)) return true;
  if (process.env['CI']) throw new Error(`${path} is missing, and CI needs it`);
  t.skip(`${path} is not available on this machine`);
  return false;
}
