// What a refusal looks like, checked the same way everywhere: a `sigil`
// command that refuses exits 1 with one `sigil: …` line on stderr naming the
// problem (and never a private key, a join token or an "unexpected error");
// a library call that refuses throws a SigilError with a code and a one-line
// message.
import assert from 'node:assert/strict';
import { type ErrorCode, SigilError } from '../../src/errors.ts';
import type { RunResult } from './cli.ts';

const NEVER_SHOWN = /PRIVATE KEY|unexpected error|sigil1\.[A-Za-z0-9_-]{16,}/;

/** The command's refusal contract: exit 1, nothing on stdout, one `sigil: …` line matching `problem`. */
export function assertRefused(result: RunResult, problem: RegExp): void {
  assert.equal(
    result.code,
    1,
    `exit code ${result.code}; stdout: ${result.stdout}; stderr: ${result.stderr}`,
  );
  assert.equal(result.stdout, '');
  assert.match(result.stderr, /^sigil: [^\n]+\n$/, `not one line: ${JSON.stringify(result.stderr)}`);
  assert.match(result.stderr, problem);
  assert.doesNotMatch(result.stderr, NEVER_SHOWN);
}

/** Bad usage (a malformed flag value, a missing argument): exit 2, nothing on stdout, commander's line naming it. */
export function assertUsageError(result: RunResult, pattern: RegExp): void {
  assert.equal(
    result.code,
    2,
    `exit code ${result.code}; stdout: ${result.stdout}; stderr: ${result.stderr}`,
  );
  assert.equal(result.stdout, '');
  assert.match(result.stderr, pattern);
  assert.match(result.stderr, /run with --help for usage/);
  assert.doesNotMatch(result.stderr, NEVER_SHOWN);
}

/**
 * A validator for assert.throws / assert.rejects: a SigilError with `code`
 * (any code when null) and a one-line message matching `pattern` (any when
 * absent); `also` checks more of it.
 */
export function refusal(
  code: ErrorCode | null,
  pattern?: RegExp,
  also?: (error: SigilError) => void,
): (error: unknown) => true {
  return (error) => {
    assert.ok(error instanceof SigilError, `expected a SigilError, got ${String(error)}`);
    if (code !== null) assert.equal(error.code, code, error.message);
    if (pattern) assert.match(error.message, pattern);
    assert.ok(!error.message.includes('\n'), `not one line: ${JSON.stringify(error.message)}`);
    also?.(error);
    return true;
  };
}

/** `fn` throws refusal(code, pattern, also). */
export function assertThrowsRefusal(
  fn: () => unknown,
  code: ErrorCode | null,
  pattern: RegExp,
  also?: (error: SigilError) => void,
): void {
  assert.throws(fn, refusal(code, pattern, also));
}

/** refusal('permission_denied', pattern). */
export const denied = (pattern: RegExp) => refusal('permission_denied', pattern);

/** refusal('invalid_argument', pattern). */
export const invalid = (pattern: RegExp) => refusal('invalid_argument', pattern);
