// `sigil enrol --wait --wait-timeout D` waits D (issue #10: with 6s it gave
// up after 3.25 s, because the poll interval doubled past the deadline and it
// stopped instead of polling once more at the deadline). The wait is measured
// from the moment node.json appears (written right after the first Register)
// to the exit; the only timing assertion is a generous lower bound: it must
// not give up well before D (the old loop stopped at about half of it).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { assertRefused } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';
import { enrol, nodeFile, startTestServer } from './server-fixture.ts';

const server = await startTestServer();

describe('sigil enrol --wait --wait-timeout', () => {
  test('--wait-timeout 6s waits the 6 seconds before giving up, and says how to go on', async () => {
    const token = await server.token();
    const dir = join(tempDir('sigil-node-'), 'node');
    const running = enrol(token, dir, '--wait', '--wait-timeout', '6s');
    let exited = false;
    running.finally(() => {
      exited = true;
    });
    let registeredAt: number | undefined;
    while (!exited && registeredAt === undefined) {
      if (existsSync(join(dir, 'node.json'))) registeredAt = Date.now();
      else await new Promise((resolve) => setTimeout(resolve, 25));
    }
    const result = await running;
    const waited = Date.now() - (registeredAt ?? Date.now());
    assert.ok(registeredAt !== undefined, `enrol exited before registering: ${result.stderr}`);
    const { nodeId } = nodeFile(dir);
    assertRefused(
      result,
      new RegExp(`node ${nodeId} is still waiting for approval \\(sigil node approve ${nodeId}\\)`),
    );
    assert.ok(waited >= 5_000, `gave up ${waited} ms after registering, with --wait-timeout 6s`);
    assert.equal(nodeFile(dir).state, 'NEW', 'the key and node.json are kept for the next run');
  });
});
