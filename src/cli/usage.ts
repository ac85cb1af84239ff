// Bad usage found after parsing (a missing argument that may also come from
// the environment, say): exit 2 like commander's own usage errors, with one
// line on stderr and the hint to run --help. Thrown before anything changes.
import { SigilError } from '../errors.ts';

export class UsageError extends SigilError {
  constructor(message: string) {
    super('invalid_argument', message);
    this.name = 'UsageError';
  }
}

export const usageError = (message: string): UsageError => new UsageError(message);
