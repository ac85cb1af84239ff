// sigil's logs: pino, one JSON object per line; a short human line per entry
// when the output is a terminal (a tiny formatter below, no extra package).
//
// Secrets never reach a log line. Every field whose name says it holds one
// (key, token, secret, password, authorization and their usual spellings), at
// the top level or nested up to three levels, is replaced by "[redacted]"
// before the line is written. Code must still not put a secret in a message
// string: redaction works on field names, not on free text.
import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger } from 'pino';

/** Field names whose values are never logged. */
export const REDACTED_FIELDS: readonly string[] = Object.freeze([
  'key',
  'privateKey',
  'private_key',
  'keyPem',
  'adminKeyPem',
  'storeKey',
  'store_key',
  'token',
  'tokenSecret',
  'token_secret',
  'joinToken',
  'secret',
  'password',
  'passphrase',
  'authorization',
  'Authorization',
  'cookie',
]);

export const REDACTION_CENSOR = '[redacted]';

/** pino redaction paths: each field at the top level and up to three levels down. */
function redactionPaths(): string[] {
  const paths: string[] = [];
  for (const field of REDACTED_FIELDS) {
    paths.push(field, `*.${field}`, `*.*.${field}`, `*.*.*.${field}`);
  }
  return paths;
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface LoggerOptions {
  /** Default: $SIGIL_LOG_LEVEL, else 'info'. */
  readonly level?: LogLevel;
  /** Where lines go. Default: standard error. */
  readonly destination?: NodeJS.WritableStream;
  /** Human lines instead of JSON. Default: when the destination is a TTY. */
  readonly pretty?: boolean;
  /** Fields on every line (e.g. { replica: 'r1' }). */
  readonly base?: Record<string, unknown>;
}

const LEVELS = new Set<string>(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

function levelFromEnvironment(): LogLevel {
  const value = process.env.SIGIL_LOG_LEVEL?.toLowerCase();
  return value && LEVELS.has(value) ? (value as LogLevel) : 'info';
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const destination = options.destination ?? process.stderr;
  const pretty = options.pretty ?? (destination as { isTTY?: boolean }).isTTY === true;
  const stream: DestinationStream = pretty ? prettyStream(destination) : destinationOf(destination);
  return pino(
    {
      level: options.level ?? levelFromEnvironment(),
      base: { ...(options.base ?? {}) },
      redact: { paths: redactionPaths(), censor: REDACTION_CENSOR },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
}

/** A logger that drops everything (tests, library use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

function destinationOf(out: NodeJS.WritableStream): DestinationStream {
  return { write: (line: string) => out.write(line) };
}

const LEVEL_COLOURS: Readonly<Record<string, string>> = {
  fatal: '\u001b[35m',
  error: '\u001b[31m',
  warn: '\u001b[33m',
  info: '\u001b[32m',
  debug: '\u001b[36m',
  trace: '\u001b[90m',
};
const RESET = '\u001b[0m';
const OMITTED = new Set(['level', 'time', 'msg', 'pid', 'hostname']);

function formatValue(value: unknown): string {
  if (typeof value === 'string') return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  return JSON.stringify(value) ?? String(value);
}

/** One JSON log line as "12:34:56.789 INFO  message key=value …". */
export function formatPrettyLine(line: string, colour = true): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.endsWith('\n') ? line : `${line}\n`;
  }
  const level = String(entry.level ?? 'info');
  const time = typeof entry.time === 'string' ? entry.time.slice(11, 23) : '';
  const label = level.toUpperCase().padEnd(5);
  const coloured = colour ? `${LEVEL_COLOURS[level] ?? ''}${label}${RESET}` : label;
  const fields: string[] = [];
  let stack = '';
  for (const [name, value] of Object.entries(entry)) {
    if (OMITTED.has(name)) continue;
    if (name === 'err' && typeof value === 'object' && value !== null) {
      const error = value as { message?: unknown; stack?: unknown };
      fields.push(`err=${formatValue(error.message)}`);
      if (typeof error.stack === 'string') stack = `\n    ${error.stack.split('\n').slice(1).join('\n    ')}`;
      continue;
    }
    fields.push(`${name}=${formatValue(value)}`);
  }
  const message = typeof entry.msg === 'string' ? entry.msg : '';
  return `${time} ${coloured} ${message}${fields.length > 0 ? ` ${fields.join(' ')}` : ''}${stack}\n`;
}

/** A pino destination that writes human lines (pino hands it whole JSON lines, already redacted). */
export function prettyStream(out: NodeJS.WritableStream, colour = true): DestinationStream {
  return {
    write: (text: string) => {
      for (const line of text.split('\n')) {
        if (line.trim() !== '') out.write(formatPrettyLine(line, colour));
      }
    },
  };
}
