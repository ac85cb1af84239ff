// sigil's logger: JSON lines by default, human lines on request, and no
// secret ever written, whatever the field it hides in.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { createLogger, formatPrettyLine, REDACTION_CENSOR } from '../../src/logging.ts';

function capture(pretty = false) {
  const out = new PassThrough();
  const chunks: string[] = [];
  out.on('data', (chunk: Buffer) => chunks.push(chunk.toString()));
  const logger = createLogger({ destination: out, pretty, level: 'trace' });
  return { logger, text: () => chunks.join('') };
}

const TOKEN = 'sigil1.AiBmZWVkZmFjZS1zZWNyZXQtdG9rZW4tdGhhdC1tdXN0LW5ldmVyLWxlYWs';
const SECRET = 'c2VjcmV0LWJ5dGVzLXRoYXQtbXVzdC1ub3QtbGVhaw';

describe('logging', () => {
  test('writes one JSON object per line with level, time and message', () => {
    const { logger, text } = capture();
    logger.info({ replica: 'r1' }, 'serving');
    const line = JSON.parse(text().trim()) as Record<string, unknown>;
    assert.equal(line.level, 'info');
    assert.equal(line.msg, 'serving');
    assert.equal(line.replica, 'r1');
    assert.equal(typeof line.time, 'string');
  });

  test('a token never appears in logs, in any field that could carry it', () => {
    for (const pretty of [false, true]) {
      const { logger, text } = capture(pretty);
      logger.info({ token: TOKEN }, 'created a token');
      logger.info({ request: { tokenSecret: SECRET, token_secret: SECRET } }, 'register');
      logger.warn({ call: { metadata: { authorization: `Bearer ${TOKEN}` } } }, 'denied');
      logger.info({ a: { b: { c: { secret: SECRET, password: SECRET, joinToken: TOKEN } } } }, 'deep');
      logger.error({ key: '-----BEGIN PRIVATE KEY-----', privateKey: 'x', storeKey: SECRET }, 'keys');
      const written = text();
      assert.doesNotMatch(written, new RegExp(TOKEN.slice(7, 30)), `pretty=${pretty}`);
      assert.doesNotMatch(written, new RegExp(SECRET.slice(0, 20)), `pretty=${pretty}`);
      assert.doesNotMatch(written, /BEGIN PRIVATE KEY/, `pretty=${pretty}`);
      assert.ok(written.includes(REDACTION_CENSOR), `pretty=${pretty}`);
    }
  });

  test('pretty lines are short and human', () => {
    const line = formatPrettyLine(
      JSON.stringify({ level: 'warn', time: '2025-01-02T03:04:05.678Z', msg: 'slow', ms: 12, who: 'a b' }),
      false,
    );
    assert.equal(line, '03:04:05.678 WARN  slow ms=12 who="a b"\n');
  });
});
