// Shutting down what was opened, in reverse order, every step whatever the
// others do (a daemon that fails half-way through its start closes the same way).
import { firstLineOf } from '../errors.ts';
import type { Logger } from '../logging.ts';

/** Closes what was opened, last first; every step runs whatever the others do. */
export class Closers {
  readonly #steps: (() => unknown)[] = [];
  add(step: () => unknown): void {
    this.#steps.push(step);
  }
  async run(logger: Logger): Promise<void> {
    for (const step of this.#steps.splice(0).reverse()) {
      try {
        await step();
      } catch (error) {
        logger.warn({ err: firstLineOf(error) }, 'shutdown step failed');
      }
    }
  }
}
