// firebuild's bootstrap flow end to end with sigil's parts only: a Dockerfile
// compiled to commands, the build context served by the bootstrap service over
// mTLS with credentials made for this build, its address and certificates put
// in the metadata document, and the real `sigil vminit` command (a separate
// process) reading them, running RUN, deploying COPY into a guest root and
// reporting Success — exit 0 — or, for a failing RUN, Abort — exit 2.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { bootstrapMetadata, createBootstrapCredentials } from '../../src/guest/bootstrap-credentials.ts';
import { startBootstrapService } from '../../src/guest/bootstrap-service.ts';
import { BuildContext } from '../../src/guest/build-context.ts';
import { compileDockerfile } from '../../src/guest/dockerfile-compiler.ts';
import type { MetadataDocument } from '../../src/guest/metadata-document.ts';
import { startMetadataService } from '../../src/guest/metadata-server.ts';
import { sigil } from '../support/cli.ts';

function tempDir(t: TestContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const BASE_DOCUMENT: Omit<MetadataDocument, 'Bootstrap'> = {
  VMMID: 'build-1',
  Drives: {},
  EntrypointJSON: '{}',
  Env: {},
  LocalHostname: 'build-1',
  ImageTag: 'test/flow:1',
  Machine: { CPU: '1', CPUTemplate: '', HTEnabled: 'false', KernelArgs: '', Mem: '64', VMLinux: '' },
  Network: { CniNetworkName: '', Interfaces: {} },
  Users: {},
};

async function runBuild(t: TestContext, dockerfile: string) {
  const context = tempDir(t, 'sigil-flow-context-');
  mkdirSync(join(context, 'site'));
  writeFileSync(join(context, 'site', 'index.html'), '<h1>hello</h1>\n');
  writeFileSync(join(context, 'run.sh'), '#!/bin/sh\necho run\n', { mode: 0o755 });
  const guestRoot = tempDir(t, 'sigil-flow-guest-');
  const compiled = compileDockerfile(dockerfile);
  const commands = compiled.stages.at(-1)?.commands ?? [];
  const build = await BuildContext.open(context);
  const credentials = createBootstrapCredentials({ serverName: 'build-1' });
  const service = await startBootstrapService({
    commands,
    resources: build.resolverFor(commands),
    credentials,
    firstCallTimeoutMs: 20_000,
  });
  t.after(() => service.stop());
  const stdout: string[] = [];
  service.events.on('stdout', ({ lines }) => stdout.push(...lines));
  const metadata = await startMetadataService('127.0.0.1', 0, {
    documentFor: () => ({
      ...BASE_DOCUMENT,
      Bootstrap: bootstrapMetadata(credentials, service.address, '1s'),
    }),
  });
  t.after(() => metadata.close());
  const result = await sigil([
    'vminit',
    '--guest-mmds-ip',
    '127.0.0.1',
    '--guest-mmds-port',
    String(metadata.port),
    '--root',
    guestRoot,
  ]);
  const outcome = await service.done;
  return { result, outcome, stdout, guestRoot, key: credentials.client.privateKey };
}

test('vminit builds a guest root from a Dockerfile over the real bootstrap service: Success, exit 0', async (t) => {
  const { result, outcome, stdout, guestRoot, key } = await runBuild(
    t,
    [
      'FROM scratch',
      'ENV GREETING=hello',
      'RUN echo "$GREETING from RUN"',
      'COPY site /srv/www/',
      'COPY --chown=65534:65534 run.sh /usr/local/bin/',
    ].join('\n'),
  );
  assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(outcome, { ok: true });
  assert.ok(stdout.includes('hello from RUN'), `stdout: ${JSON.stringify(stdout)}`);
  assert.equal(readFileSync(join(guestRoot, 'srv/www/index.html'), 'utf8'), '<h1>hello</h1>\n');
  const script = statSync(join(guestRoot, 'usr/local/bin/run.sh'));
  assert.equal(script.mode & 0o777, 0o755);
  assert.equal(script.uid, 65534);
  for (const output of [result.stdout, result.stderr]) {
    assert.ok(!output.includes(key.split('\n')[1]), 'the bootstrap key is never printed');
  }
});

test('a failing RUN aborts the build with its exit code: Abort reaches the service, vminit exits 2', async (t) => {
  const { result, outcome, guestRoot } = await runBuild(
    t,
    ['FROM scratch', 'RUN exit 7', 'COPY site /srv/www/'].join('\n'),
  );
  assert.equal(result.code, 2, result.stderr);
  assert.equal(outcome.ok, false);
  assert.match(outcome.ok ? '' : outcome.error.message, /command exited with code: 7/);
  assert.throws(() => statSync(join(guestRoot, 'srv')), /ENOENT/, 'nothing after the failed RUN ran');
});
