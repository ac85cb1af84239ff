// The metadata service where workloads look for it: 169.254.169.254:80 in the
// namespace of the workload bridges, reached from real workload network
// namespaces (`unshare --net sleep`, attached to a bridge by
// WorkloadNetworks). Each workload reads its own document by its address;
// a caller that is no workload (the bridge namespace itself) gets 403; the
// relay refuses a connection without its preamble; close removes the relay
// and the address. The host's own namespace is never touched.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, type TestContext, test } from 'node:test';
import { promisify } from 'node:util';
import type { MetadataDocument } from '../../src/guest/metadata-document.ts';
import { startMetadataRelay } from '../../src/guest/metadata-relay.ts';
import { startRelayedMetadataService } from '../../src/guest/metadata-server.ts';
import { openWorkloadNetworks, type WorkloadNetworks } from '../../src/workloads/networks.ts';

const execFileAsync = promisify(execFile);
const unavailable = process.getuid?.() !== 0 ? 'the relay needs root (network namespaces)' : null;

function documentNamed(name: string): MetadataDocument {
  return {
    VMMID: name,
    Drives: {},
    EntrypointJSON: '{}',
    Env: { WHO: name },
    LocalHostname: name,
    ImageTag: 'test/busybox:1',
    Machine: { CPU: '1', CPUTemplate: '', HTEnabled: 'false', KernelArgs: '', Mem: '64', VMLinux: '' },
    Network: { CniNetworkName: '', Interfaces: {} },
    Users: {},
  };
}

/** A process with a network namespace of its own, killed when the test ends. */
function workloadProcess(t: TestContext): ChildProcess {
  const child = spawn('unshare', ['--net', 'sleep', '60'], { stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  return child;
}

/** Runs a Node snippet inside a network namespace and returns what it prints (async: the service is in this process). */
async function nodeIn(netns: string, source: string): Promise<string> {
  const { stdout } = await execFileAsync(
    'nsenter',
    [`--net=${netns}`, '--', process.execPath, '--input-type=module', '-e', source],
    { encoding: 'utf8', timeout: 15_000 },
  );
  return stdout;
}

/** The script a workload runs: token, then the JSON document, printed as {status, body}. */
const READ_DOCUMENT = `
const base = 'http://169.254.169.254';
const put = await fetch(base + '/latest/api/token', { method: 'PUT', headers: { 'x-metadata-token-ttl-seconds': '60' } });
const token = await put.text();
const get = await fetch(base + '/latest/meta-data', { headers: { accept: 'application/json', 'x-metadata-token': token } });
process.stdout.write(JSON.stringify({ put: put.status, status: get.status, body: await get.text() }));
`;

async function setUp(t: TestContext) {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-relay-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const networks: WorkloadNetworks = await openWorkloadNetworks({
    bridges: ['brm0=10.79.0.1/24'],
    namespace: { create: `test-${randomBytes(4).toString('hex')}` },
  });
  t.after(() => networks.close());
  const documents = new Map<string, MetadataDocument>();
  const service = await startRelayedMetadataService(join(dir, 'metadata.sock'), {
    documentFor: (source) => documents.get(source) ?? null,
  });
  t.after(() => service.close());
  const relay = await startMetadataRelay({
    namespace: networks.namespace,
    socketPath: join(dir, 'metadata.sock'),
  });
  t.after(() => relay.close());
  return { dir, networks, documents, relay };
}

describe('metadata relay on the workload bridges', { skip: unavailable ?? false }, () => {
  test('each workload reads its own document at 169.254.169.254:80, chosen by its address', async (t) => {
    const { networks, documents } = await setUp(t);
    const alpha = workloadProcess(t);
    const beta = workloadProcess(t);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const a = await networks.attach(alpha.pid!, 'brm0', 'alpha', ['brm0']);
    const b = await networks.attach(beta.pid!, 'brm0', 'beta', ['brm0']);
    documents.set(a.address, documentNamed('alpha'));
    documents.set(b.address, documentNamed('beta'));
    for (const [child, name] of [
      [alpha, 'alpha'],
      [beta, 'beta'],
    ] as const) {
      const answer = JSON.parse(await nodeIn(`/proc/${child.pid}/ns/net`, READ_DOCUMENT));
      assert.equal(answer.put, 200);
      assert.equal(answer.status, 200);
      const document = JSON.parse(answer.body);
      assert.equal(document.VMMID, name);
      assert.deepEqual(document.Env, { WHO: name });
    }
  });

  test('refuses a caller that is no workload: the bridge namespace itself gets 403', async (t) => {
    const { networks } = await setUp(t);
    const answer = JSON.parse(await nodeIn(`/run/netns/${networks.namespace}`, READ_DOCUMENT));
    assert.equal(answer.put, 403);
    assert.equal(answer.status, 403);
  });

  test('refuses a connection to the daemon socket without the relay preamble', async (t) => {
    const { dir } = await setUp(t);
    const reply = await new Promise<string>((resolve) => {
      const socket = createConnection(join(dir, 'metadata.sock'));
      let data = '';
      socket.on('data', (chunk) => {
        data += chunk.toString();
      });
      socket.on('close', () => resolve(data));
      socket.on('error', () => resolve(data));
      socket.write('GET /latest/meta-data HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    assert.equal(reply, '', 'nothing is answered');
  });

  test('close stops the relay and removes the address from the namespace', async (t) => {
    const { networks, relay } = await setUp(t);
    const before = execFileSync('ip', ['-netns', networks.namespace, 'address', 'show', 'dev', 'lo'], {
      encoding: 'utf8',
    });
    assert.match(before, /169\.254\.169\.254\/32/);
    await relay.close();
    const afterClose = execFileSync('ip', ['-netns', networks.namespace, 'address', 'show', 'dev', 'lo'], {
      encoding: 'utf8',
    });
    assert.doesNotMatch(afterClose, /169\.254\.169\.254/);
  });
});
