// How commands print: data goes to stdout (JSON with --json, text otherwise);
// progress and warnings go to stderr so they never corrupt piped JSON.

export interface OutputOptions {
  readonly json?: boolean;
}

export function printResult(options: OutputOptions, data: unknown, text: () => string): void {
  if (options.json) process.stdout.write(`${JSON.stringify(data, jsonReplacer, 2)}\n`);
  else process.stdout.write(text().replace(/\n?$/, '\n'));
}

export function warn(message: string): void {
  process.stderr.write(`sigil: warning: ${message}\n`);
}

/** Progress lines only when a person is watching. */
export function progress(message: string): void {
  if (process.stderr.isTTY) process.stderr.write(`${message}\n`);
}

function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (Buffer.isBuffer(value)) return value.toString('hex');
  return value;
}
