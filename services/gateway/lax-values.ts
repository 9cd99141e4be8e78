import { z } from 'zod';

/**
 * Zod schemas for option values as Roboflow's server reads them (pydantic's lax mode): a query
 * string carries only text, and Roboflow's clients send Python's spelling (`True`) or numbers as
 * strings (`"0.5"`), in the query and in JSON bodies alike. Every boolean and number option of
 * every route is parsed with these, so all routes accept the same spellings.
 */

/** Text spellings of true, compared after trimming and lower-casing (pydantic's set). */
export const TRUE_SPELLINGS = ['true', '1', 'yes', 'on', 't', 'y'] as const;
/** Text spellings of false, compared after trimming and lower-casing (pydantic's set). */
export const FALSE_SPELLINGS = ['false', '0', 'no', 'off', 'f', 'n'] as const;

const TRUE_SET: ReadonlySet<string> = new Set(TRUE_SPELLINGS);
const FALSE_SET: ReadonlySet<string> = new Set(FALSE_SPELLINGS);

/** The boolean a value stands for, or the value itself when it stands for none. */
function toBoolean(value: unknown): unknown {
  if (typeof value === 'number') return value === 1 ? true : value === 0 ? false : value;
  if (typeof value !== 'string') return value;
  const text = value.trim().toLowerCase();
  if (TRUE_SET.has(text)) return true;
  if (FALSE_SET.has(text)) return false;
  return value;
}

/**
 * A boolean: JSON `true`/`false`, the numbers 1 and 0, or any spelling of TRUE_SPELLINGS and
 * FALSE_SPELLINGS in any case (`True`, `FALSE`, `yes`, `On`, ...). Anything else is an issue
 * that lists the accepted spellings.
 */
export function laxBoolean() {
  return z.preprocess(
    toBoolean,
    z.boolean({
      error: `expected a boolean: ${TRUE_SPELLINGS.join('/')} or ${FALSE_SPELLINGS.join('/')} (any case)`,
    }),
  );
}

/** A decimal numeral, as Python's float() reads one (no hex, octal or binary). */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** The number a value stands for, or the value itself when it stands for none. */
function toNumber(value: unknown): unknown {
  if (typeof value !== 'string' || !DECIMAL.test(value.trim())) return value;
  const n = Number(value.trim());
  return Number.isFinite(n) ? n : value;
}

/**
 * A finite number from a JSON number or a numeric string (`"0.5"`, `" 25 "`). `inner` adds the
 * range and integer checks; its input is always a number.
 */
export function laxNumber<T extends z.ZodType<number, number>>(inner: T) {
  return z.preprocess(toNumber, inner);
}

/** The confidence keywords Roboflow's request models accept besides a number. */
export const CONFIDENCE_KEYWORDS = ['default', 'best'] as const;
export type ConfidenceKeyword = (typeof CONFIDENCE_KEYWORDS)[number];

/**
 * A request's confidence before it meets a model: a number (0..1 after scaling), `default` (the
 * server's default) or `best` (the model's recommended threshold; see resolveConfidence).
 */
export type ConfidenceSetting = number | ConfidenceKeyword;

/**
 * A confidence: a number in `min..max` (number or numeric string) or one of CONFIDENCE_KEYWORDS.
 * @param max 1 for fractions (JSON route), 100 where a percentage is accepted (legacy route).
 */
export function laxConfidence(max: number) {
  return z.preprocess(
    (v) =>
      typeof v === 'string' && (CONFIDENCE_KEYWORDS as readonly string[]).includes(v)
        ? v
        : toNumber(v),
    z.union([z.number().min(0).max(max), z.enum(CONFIDENCE_KEYWORDS)], {
      error: `expected a number 0..${max}, 'default' or 'best'`,
    }),
  );
}
