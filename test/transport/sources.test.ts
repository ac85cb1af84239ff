// Material sources: a fixed set, a programmatic provider, and PEM files on
// disk that are watched and applied only as a valid, matching set.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SigilError } from '../../src/errors.ts';
import { createCrl } from '../../src/pki/crl.ts';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import type { TlsMaterial } from '../../src/pki/material.ts';
import { dnsName, spiffeId, uriName } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { FileMaterialSource } from '../../src/transport/file-source.ts';
import { MaterialProvider } from '../../src/transport/material-provider.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { refusal } from '../support/refusals.ts';

const hour = 3_600_000;

// A root the tests hold the key of, so they can sign CRLs too.
const rootKeys = generateKeyPair('p256');
// Back-dated, so the test can also issue a leaf that has already expired.
const root = createRootCertificate({
  privateKey: rootKeys.privateKey,
  subject: { commonName: 'sources test root' },
  now: new Date(Date.now() - 24 * 3_600_000),
});
const rootPem = encodePem('CERTIFICATE', root.der);
const issuer = Issuer.fromCertificate(root.der, rootKeys.privateKey);

function leaf(
  name: string,
  options: { ttlMs?: number; now?: Date } = {},
): { cert: string; key: string; serial: string } {
  const keys = generateKeyPair('p256');
  const issued = issuer.issue({
    publicKey: keys.publicKey,
    profile: 'server',
    sans: [dnsName(name), uriName(spiffeId('sources.test', 'server', name))],
    ttlMs: options.ttlMs ?? hour,
    now: options.now,
  });
  return {
    cert: encodePem('CERTIFICATE', issued.der),
    key: privateKeyToPem(keys.privateKey),
    serial: issued.serialHex,
  };
}

function material(pair: { cert: string; key: string }): TlsMaterial {
  return { certificateChain: pair.cert, privateKey: pair.key, trustBundle: rootPem };
}

function crlPem(nextUpdate: Date, thisUpdate = new Date()): string {
  const der = createCrl({
    issuerCertificate: root.der,
    issuerKey: rootKeys.privateKey,
    thisUpdate,
    nextUpdate,
    crlNumber: 1n,
    entries: [],
  });
  return encodePem('X509 CRL', der);
}

/**
 * A callback that records every value it gets, and a promise for the next
 * one (rejecting after `ms`, so a missing event fails the test instead of
 * hanging it). reset() waits for a further value.
 */
function recorder<T>(ms = 10_000): {
  callback: (value: T) => void;
  values: T[];
  next: Promise<T>;
  reset(): void;
} {
  const values: T[] = [];
  let resolve: (value: T) => void = () => {};
  let timer: NodeJS.Timeout | undefined;
  const state = {
    callback: (value: T) => {
      values.push(value);
      clearTimeout(timer);
      resolve(value);
    },
    values,
    next: Promise.resolve() as Promise<T>,
    reset() {
      clearTimeout(timer);
      state.next = new Promise<T>((res, rej) => {
        resolve = res;
        timer = setTimeout(() => rej(new Error(`no event within ${ms} ms`)), ms);
      });
    },
  };
  state.reset();
  return state;
}

/** Writes through a temporary file and a rename, so a watcher never reads a partly written file. */
async function replaceFile(path: string, content: string): Promise<void> {
  await writeFile(`${path}.tmp`, content);
  await rename(`${path}.tmp`, path);
}

describe('StaticMaterialSource', () => {
  test('holds valid material and refuses a mismatched pair at construction', () => {
    const a = leaf('a.test');
    const b = leaf('b.test');
    const source = new StaticMaterialSource(material(a));
    assert.equal(source.current().certificateChain, a.cert);
    const unsubscribe = source.subscribe(() => assert.fail('a static source never changes'));
    unsubscribe();
    assert.throws(
      () => new StaticMaterialSource(material({ cert: a.cert, key: b.key })),
      refusal(null, /private key does not match/),
    );
  });

  test('refuses an expired certificate', () => {
    const old = leaf('old.test', { ttlMs: 60_000, now: new Date(Date.now() - 2 * 60_000) });
    assert.throws(() => new StaticMaterialSource(material(old)), /expired/);
  });
});

describe('MaterialProvider', () => {
  test('set() validates, replaces and notifies; an invalid set throws and the previous stays', () => {
    const first = leaf('first.test');
    const provider = new MaterialProvider(material(first));
    const seen: string[] = [];
    const unsubscribe = provider.subscribe((m) => seen.push(m.certificateChain));

    const second = leaf('second.test');
    const validated = provider.set(material(second));
    assert.equal(validated.leaf.serialHex, second.serial);
    assert.deepEqual(seen, [second.cert]);
    assert.equal(provider.current().certificateChain, second.cert);

    const third = leaf('third.test');
    assert.throws(
      () => provider.set(material({ cert: third.cert, key: first.key })),
      /private key does not match/,
    );
    assert.throws(() => provider.set({ ...material(third), trustBundle: 'not pem' }), SigilError);
    assert.equal(provider.current().certificateChain, second.cert);
    assert.deepEqual(seen, [second.cert]);

    unsubscribe();
    provider.set(material(third));
    assert.deepEqual(seen, [second.cert]);
  });

  test('a failing subscriber neither stops the others nor undoes the set', () => {
    const errors: unknown[] = [];
    const provider = new MaterialProvider(material(leaf('x.test')), {
      onListenerError: (e) => errors.push(e),
    });
    const seen: string[] = [];
    provider.subscribe(() => {
      throw new Error('subscriber broke');
    });
    provider.subscribe((m) => seen.push(m.certificateChain));
    const next = leaf('y.test');
    provider.set(material(next));
    assert.deepEqual(seen, [next.cert]);
    assert.equal(errors.length, 1);
    assert.equal(provider.current().certificateChain, next.cert);
  });

  test('an expired CRL is refused and the previous material stays', () => {
    const pair = leaf('crl.test');
    const provider = new MaterialProvider({ ...material(pair), crls: [crlPem(new Date(Date.now() + hour))] });
    const expired = crlPem(new Date(Date.now() - hour), new Date(Date.now() - 2 * hour));
    assert.throws(() => provider.set({ ...material(pair), crls: [expired] }), /expired/);
    assert.notEqual(provider.current().crls?.[0], expired);
  });
});

describe('FileMaterialSource', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigil-file-source-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function writeSet(sub: string, pair: { cert: string; key: string }, crls?: string[]) {
    const base = join(dir, sub);
    await rm(base, { recursive: true, force: true });
    await mkdir(base, { recursive: true });
    const files = {
      certificateChain: join(base, 'tls.crt'),
      privateKey: join(base, 'tls.key'),
      trustBundle: join(base, 'ca.crt'),
      ...(crls ? { crls: crls.map((_, i) => join(base, `ca-${i}.crl`)) } : {}),
    };
    await writeFile(files.certificateChain, pair.cert);
    await writeFile(files.privateKey, pair.key, { mode: 0o600 });
    await writeFile(files.trustBundle, rootPem);
    for (const [i, crl] of (crls ?? []).entries()) await writeFile(join(base, `ca-${i}.crl`), crl);
    return files;
  }

  test('half-written pair (cert updated, key not yet) is not applied, then the matching key is', async (t) => {
    const first = leaf('files.test');
    const files = await writeSet('half', first);
    const errors = recorder<SigilError>();
    const applied = recorder<TlsMaterial>();
    const source = await FileMaterialSource.open({
      ...files,
      onError: errors.callback,
      debounceMs: 20,
      pollIntervalMs: 250,
    });
    t.after(() => source.close());
    source.subscribe(applied.callback);
    assert.equal(source.current().certificateChain, first.cert);

    const second = leaf('files.test');
    await replaceFile(files.certificateChain, second.cert); // the key is still the old one
    const error = await errors.next;
    assert.equal(error.code, 'failed_precondition');
    assert.match(error.message, /not applied, the previous material stays in use/);
    assert.match(error.message, /private key does not match/);
    assert.doesNotMatch(error.message, /BEGIN/);
    assert.equal(source.current().certificateChain, first.cert);

    // Polling and repeated reloads do not report the same broken state again.
    assert.equal(await source.reload(), 'rejected');
    assert.equal(await source.reload(), 'rejected');
    assert.equal(errors.values.length, 1);

    await replaceFile(files.privateKey, second.key);
    const next = await applied.next;
    assert.equal(next.certificateChain, second.cert);
    assert.equal(next.privateKey, second.key);
    assert.equal(source.current().certificateChain, second.cert);
    assert.equal(await source.reload(), 'unchanged');
  });

  test('garbage file not applied', async (t) => {
    const pair = leaf('garbage.test');
    const files = await writeSet('garbage', pair);
    const errors = recorder<SigilError>();
    const source = await FileMaterialSource.open({
      ...files,
      onError: errors.callback,
      debounceMs: 20,
      pollIntervalMs: 250,
    });
    t.after(() => source.close());
    source.subscribe(() => assert.fail('garbage must not be applied'));

    await replaceFile(files.certificateChain, '-----BEGIN CERTIFICATE-----\nnot base64 at all!\n');
    const error = await errors.next;
    assert.match(error.message, /not terminated|invalid base64/);
    assert.equal(source.current().certificateChain, pair.cert);

    errors.reset();
    await replaceFile(files.trustBundle, 'just some text, no PEM here');
    await replaceFile(files.certificateChain, pair.cert);
    assert.match((await errors.next).message, /trust bundle: not a valid X\.509 certificate/);
    assert.equal(source.current().trustBundle, rootPem);
  });

  test('a set replaced by renaming into place is applied', async (t) => {
    const first = leaf('rename.test');
    const files = await writeSet('rename', first);
    const applied = recorder<TlsMaterial>();
    const source = await FileMaterialSource.open({
      ...files,
      onError: () => {},
      debounceMs: 20,
      pollIntervalMs: 250,
    });
    t.after(() => source.close());
    source.subscribe(applied.callback);

    const second = leaf('rename.test');
    await writeFile(`${files.privateKey}.tmp`, second.key);
    await writeFile(`${files.certificateChain}.tmp`, second.cert);
    await rename(`${files.privateKey}.tmp`, files.privateKey);
    await rename(`${files.certificateChain}.tmp`, files.certificateChain);
    assert.equal((await applied.next).certificateChain, second.cert);
  });

  test('CRL files are part of the set; an expired CRL is refused', async (t) => {
    const pair = leaf('crl-files.test');
    const files = await writeSet('crl', pair, [crlPem(new Date(Date.now() + hour))]);
    const errors = recorder<SigilError>();
    const source = await FileMaterialSource.open({
      ...files,
      onError: errors.callback,
      debounceMs: 20,
      pollIntervalMs: 250,
    });
    t.after(() => source.close());
    const current = source.current().crls?.[0];
    assert.ok(current);
    const crlPath = files.crls?.[0] ?? '';
    await replaceFile(crlPath, crlPem(new Date(Date.now() - hour), new Date(Date.now() - 2 * hour)));
    assert.match((await errors.next).message, /CRL #1 .* expired/);
    assert.equal(source.current().crls?.[0], current);
  });

  test('open() refuses files that are missing or do not match', async () => {
    const a = leaf('open.test');
    const b = leaf('open.test');
    const files = await writeSet('open', { cert: a.cert, key: b.key });
    await assert.rejects(
      FileMaterialSource.open(files),
      refusal(null, /is not usable: the private key does not match/),
    );
    await assert.rejects(
      FileMaterialSource.open({ ...files, privateKey: join(dir, 'open', 'missing.key') }),
      refusal('not_found', /missing\.key/),
    );
  });

  test('close() stops watching', async () => {
    const first = leaf('close.test');
    const files = await writeSet('close', first);
    const source = await FileMaterialSource.open({
      ...files,
      onError: () => {},
      debounceMs: 10,
      pollIntervalMs: 50,
    });
    source.subscribe(() => assert.fail('no change may be applied after close()'));
    source.close();
    source.close();
    const second = leaf('close.test');
    await writeFile(files.privateKey, second.key);
    await writeFile(files.certificateChain, second.cert);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(source.current().certificateChain, first.cert);
  });
});
