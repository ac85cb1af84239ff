// A sigil logger whose JSON lines the test reads back as objects.
import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../src/logging.ts';

/** A logger (level info, JSON) whose lines are parsed into `lines` as they are written. */
export function capturingLogger(lines: Record<string, unknown>[]): Logger {
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      callback();
    },
  });
  return createLogger({ destination, pretty: false, level: 'info' });
}
