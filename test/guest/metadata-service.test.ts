// The metadata service over real HTTP on loopback: two workloads are two
// source addresses (127.0.0.2 and 127.0.0.3, bound by the client), so "whose
// document" is decided exactly as on a workload network. Firebuild's JSON
// keys, Firecracker's plain text and session tokens, and every refusal.
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { MetadataDocument } from '../../src/guest/metadata-document.ts';
import { type MetadataService, startMetadataService, TOKEN_PATH } from '../../src/guest/metadata-server.ts';
import { MAX_TOKEN_TTL_SECONDS, MAX_TOKENS_PER_WORKLOAD } from '../../src/guest/metadata-tokens.ts';

function documentNamed(name: string): MetadataDocument {
  return {
    VMMID: `vmm-${name}`,
    Drives: {
      '1': {
        DriveID: '1',
        IsReadOnly: 'false',
        IsRootDevice: 'true',
        PartUUID: '',
        PathOnHost: `/srv/${name}.ext4`,
      },
    },
    EntrypointJSON: JSON.stringify({
      Cmd: ['serve'],
      EntryPoint: [],
      Env: {},
      Shell: ['/bin/sh', '-c'],
      User: '0:0',
      Workdir: '/',
    }),
    Env: { GREETING: `hello ${name}` },
    LocalHostname: name,
    ImageTag: 'acme/web:1',
    Machine: {
      CPU: '1',
      CPUTemplate: '',
      HTEnabled: 'false',
      KernelArgs: 'console=ttyS0',
      Mem: '128',
      VMLinux: '',
    },
    Network: { CniNetworkName: 'br0', Interfaces: {} },
    Users: { root: { SSHKeys: '' } },
  };
}

interface Response {
  status: number;
  body: string;
  type: string | undefined;
}

/** One HTTP request from `from` (the workload's address). */
function ask(
  service: MetadataService,
  from: string,
  method: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port: service.port, localAddress: from, method, path, headers },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body, type: res.headers['content-type'] }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('the metadata service', () => {
  let service: MetadataService;
  let clock = Date.now();
  const documents = new Map([
    ['127.0.0.2', documentNamed('web')],
    ['127.0.0.3', documentNamed('db')],
  ]);

  before(async () => {
    service = await startMetadataService('127.0.0.1', 0, {
      documentFor: (address) => documents.get(address) ?? null,
      now: () => clock,
    });
  });
  after(() => service.close());

  const tokenFor = async (from: string, ttl = '60'): Promise<string> => {
    const response = await ask(service, from, 'PUT', TOKEN_PATH, { 'X-metadata-token-ttl-seconds': ttl });
    assert.equal(response.status, 200, response.body);
    return response.body;
  };

  test("a workload reads its own document with firebuild's JSON keys", async () => {
    const token = await tokenFor('127.0.0.2');
    const response = await ask(service, '127.0.0.2', 'GET', '/latest/meta-data', {
      Accept: 'application/json',
      'X-metadata-token': token,
    });
    assert.equal(response.status, 200);
    assert.equal(response.type, 'application/json');
    const document = JSON.parse(response.body) as MetadataDocument;
    assert.deepEqual(document, documentNamed('web'));
    assert.deepEqual(Object.keys(document).sort(), [
      'Drives',
      'EntrypointJSON',
      'Env',
      'ImageTag',
      'LocalHostname',
      'Machine',
      'Network',
      'Users',
      'VMMID',
    ]);
  });

  test("without Accept: application/json, Firecracker's plain text: keys a line, objects with '/', strings as they are", async () => {
    const token = await tokenFor('127.0.0.2');
    const headers = { 'X-metadata-token': token };
    const listing = await ask(service, '127.0.0.2', 'GET', '/latest/meta-data/', headers);
    assert.equal(listing.status, 200);
    assert.deepEqual(listing.body.split('\n'), [
      'VMMID',
      'Drives/',
      'EntrypointJSON',
      'Env/',
      'LocalHostname',
      'ImageTag',
      'Machine/',
      'Network/',
      'Users/',
    ]);
    assert.equal(
      (await ask(service, '127.0.0.2', 'GET', '/latest/meta-data/LocalHostname', headers)).body,
      'web',
    );
    assert.equal(
      (await ask(service, '127.0.0.2', 'GET', '/latest/meta-data/Env/GREETING', headers)).body,
      'hello web',
    );
    assert.equal((await ask(service, '127.0.0.2', 'GET', '/', headers)).body, 'latest/');
  });

  test('each workload gets its own document, decided by its address, never another', async () => {
    const token = await tokenFor('127.0.0.3');
    const response = await ask(service, '127.0.0.3', 'GET', '/latest/meta-data/LocalHostname', {
      'X-metadata-token': token,
    });
    assert.equal(response.body, 'db');
  });

  test('refused: an address that is no workload of this node (403)', async () => {
    const response = await ask(service, '127.0.0.4', 'GET', '/latest/meta-data');
    assert.equal(response.status, 403);
    assert.match(response.body, /no workload of this node/);
    const put = await ask(service, '127.0.0.4', 'PUT', TOKEN_PATH, { 'X-metadata-token-ttl-seconds': '60' });
    assert.equal(put.status, 403, 'no token for a stranger either');
  });

  test('refused: a read without a token, with a made-up one, and with another workload’s (401)', async () => {
    assert.equal((await ask(service, '127.0.0.2', 'GET', '/latest/meta-data')).status, 401);
    const madeUp = await ask(service, '127.0.0.2', 'GET', '/latest/meta-data', {
      'X-metadata-token': 'x'.repeat(43),
    });
    assert.equal(madeUp.status, 401);
    const dbToken = await tokenFor('127.0.0.3');
    const borrowed = await ask(service, '127.0.0.2', 'GET', '/latest/meta-data', {
      'X-metadata-token': dbToken,
    });
    assert.equal(borrowed.status, 401);
    assert.match(borrowed.body, /PUT \/latest\/api\/token first/);
  });

  test('refused: an expired token (401); a fresh one works', async () => {
    const token = await tokenFor('127.0.0.2', '1');
    const headers = { 'X-metadata-token': token };
    assert.equal((await ask(service, '127.0.0.2', 'GET', '/latest/meta-data/VMMID', headers)).status, 200);
    clock += 1001;
    assert.equal((await ask(service, '127.0.0.2', 'GET', '/latest/meta-data/VMMID', headers)).status, 401);
    const fresh = await tokenFor('127.0.0.2', '1');
    assert.equal(
      (await ask(service, '127.0.0.2', 'GET', '/latest/meta-data/VMMID', { 'X-metadata-token': fresh })).body,
      'vmm-web',
    );
  });

  test('refused: a token TTL that is missing, not a number, 0 or over the maximum (400)', async () => {
    for (const ttl of [undefined, 'soon', '0', String(MAX_TOKEN_TTL_SECONDS + 1), '-5']) {
      const headers: Record<string, string> =
        ttl === undefined ? {} : { 'X-metadata-token-ttl-seconds': ttl };
      const response = await ask(service, '127.0.0.2', 'PUT', TOKEN_PATH, headers);
      assert.equal(response.status, 400, `ttl ${ttl}: ${response.body}`);
      assert.match(response.body, /X-metadata-token-ttl-seconds/);
    }
    await tokenFor('127.0.0.2', String(MAX_TOKEN_TTL_SECONDS));
  });

  test('refused: a request relayed through a proxy (X-Forwarded-For), token or not (400)', async () => {
    const put = await ask(service, '127.0.0.2', 'PUT', TOKEN_PATH, {
      'X-metadata-token-ttl-seconds': '60',
      'X-Forwarded-For': '10.0.0.9',
    });
    assert.equal(put.status, 400);
    const token = await tokenFor('127.0.0.2');
    const get = await ask(service, '127.0.0.2', 'GET', '/latest/meta-data', {
      'X-metadata-token': token,
      'X-Forwarded-For': '10.0.0.9',
    });
    assert.equal(get.status, 400);
  });

  test('refused: a path that is not there (404), bad percent-encoding (400), another method (405)', async () => {
    const headers = { 'X-metadata-token': await tokenFor('127.0.0.2') };
    assert.equal((await ask(service, '127.0.0.2', 'GET', '/latest/meta-data/Nope', headers)).status, 404);
    assert.equal(
      (await ask(service, '127.0.0.2', 'GET', '/latest/meta-data/VMMID/deeper', headers)).status,
      404,
    );
    assert.equal((await ask(service, '127.0.0.2', 'GET', '/latest/meta-data/%E0%A4%A', headers)).status, 400);
    assert.equal(
      (await ask(service, '127.0.0.2', 'GET', '/latest/meta-data/__proto__', headers)).status,
      404,
    );
    assert.equal((await ask(service, '127.0.0.2', 'DELETE', '/latest/meta-data', headers)).status, 405);
  });

  test(`refused: more than ${MAX_TOKENS_PER_WORKLOAD} live tokens for one workload (429); another workload is not affected`, async () => {
    clock += MAX_TOKEN_TTL_SECONDS * 1000 + 1; // every earlier token has expired
    for (let i = 0; i < MAX_TOKENS_PER_WORKLOAD; i++) await tokenFor('127.0.0.2');
    const over = await ask(service, '127.0.0.2', 'PUT', TOKEN_PATH, { 'X-metadata-token-ttl-seconds': '60' });
    assert.equal(over.status, 429);
    await tokenFor('127.0.0.3');
  });
});
