import type { z } from 'zod';

/**
 * How zod's findings are told to people and how JSON from outside a process is read. Every
 * boundary that validates (the environment, HTTP requests, the models file, messages and job
 * payloads read from Redis) words its problems with `formatIssues`, so they all read alike:
 * `field.path: message`, one per problem, every problem at once.
 */

/**
 * One line per zod issue: `path.to.field: message`, the path joined with dots (list indices
 * included, `image.1.type`).
 *
 * @param root what an issue about the whole value is called (an issue with an empty path), e.g.
 *   `body`, `query`
 * @defaultValue root `'(top)'`
 */
export function formatIssues(error: z.ZodError, root = '(top)'): string[] {
  return error.issues.map((i) => `${i.path.map(String).join('.') || root}: ${i.message}`);
}

/** What `parseJson` found: the parsed value, or every problem as formatIssues' lines. */
export type JsonParse<T> = { ok: true; value: T } | { ok: false; problems: string[] };

/**
 * Parses JSON text read from outside the process (Redis, a pub/sub channel) with a contract's
 * schema: the value is trusted only after this, never cast. Never throws.
 *
 * @returns the value as the schema outputs it, or the problems (`not JSON: ...` when the text
 *   is not JSON at all)
 */
export function parseJson<S extends z.ZodType>(schema: S, text: string): JsonParse<z.output<S>> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { ok: false, problems: [`not JSON: ${(err as Error).message}`] };
  }
  const parsed = schema.safeParse(raw);
  return parsed.success
    ? { ok: true, value: parsed.data }
    : { ok: false, problems: formatIssues(parsed.error) };
}
