// `sigil pki` end to end: the real CLI in a subprocess, checked with the real
// openssl. Refusals are in pki-refusals.test.ts, quickstart and a TLS
// handshake in pki-quickstart.test.ts.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { openssl, sigil } from '../support/cli.ts';
import { tempDir } from '../support/temp-dir.ts';
import { makeCa, NEW_P256_KEY, pemCertificates } from './pki-helpers.ts';

const mode = (path: string) => statSync(path).mode & 0o777;

async function publicKeyOf(args: readonly string[]): Promise<string> {
  const result = await openssl(args);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout;
}

// The suites run side by side: each test spends most of its time waiting for subprocesses.
describe('sigil pki', { concurrency: 3 }, () => {
  describe('pki init + issue, checked by openssl', { concurrency: 3 }, () => {
    for (const keyType of ['p256', 'p384', 'ed25519', 'rsa2048']) {
      for (const intermediate of [false, true]) {
        test(`${keyType}, ${intermediate ? 'with' : 'without'} an intermediate`, async () => {
          const dir = tempDir();
          const ca = join(dir, 'ca');
          const init = await sigil([
            'pki',
            'init',
            '--dir',
            ca,
            '--key-type',
            keyType,
            ...(intermediate ? ['--intermediate'] : []),
            '--json',
          ]);
          assert.equal(init.code, 0, init.stderr);
          const created = JSON.parse(init.stdout);
          assert.equal(created.keyType, keyType);
          assert.equal(created.trustDomain, 'sigil.internal');
          assert.equal(created.encrypted, false);
          assert.equal(created.root.subject, 'CN=sigil root CA');
          assert.equal(mode(ca), 0o700);
          assert.equal(mode(join(ca, 'root.key')), 0o600);
          assert.equal(mode(join(ca, 'root.pem')), 0o644);
          assert.equal(readFileSync(join(ca, 'ca.pem'), 'utf8'), readFileSync(join(ca, 'root.pem'), 'utf8'));
          const metadata = JSON.parse(readFileSync(join(ca, 'sigil-ca.json'), 'utf8'));
          assert.equal(metadata.version, 1);
          assert.equal(metadata.keyType, keyType);
          assert.equal(metadata.crlNumber, 0);
          if (intermediate) {
            assert.equal(created.intermediate.subject, 'CN=sigil intermediate CA');
            assert.equal(mode(join(ca, 'intermediate.key')), 0o600);
            assert.ok(Date.parse(created.intermediate.notAfter) < Date.parse(created.root.notAfter));
            const text = await openssl(['x509', '-in', join(ca, 'intermediate.pem'), '-noout', '-text']);
            assert.match(text.stdout, /CA:TRUE, pathlen:0/);
          } else {
            assert.equal(created.intermediate, null);
            assert.equal(existsSync(join(ca, 'intermediate.pem')), false);
          }
          const fingerprint = await openssl([
            'x509',
            '-in',
            join(ca, 'root.pem'),
            '-noout',
            '-fingerprint',
            '-sha256',
          ]);
          assert.equal(fingerprint.stdout.trim(), `sha256 Fingerprint=${created.root.fingerprintSha256}`);

          const out = join(dir, 'api');
          const issue = await sigil([
            'pki',
            'issue',
            '--dir',
            ca,
            '--server',
            '--client',
            '--dns',
            'api.internal,localhost',
            '--ip',
            '127.0.0.1',
            '--ip',
            '::1',
            '--out',
            out,
            '--json',
          ]);
          assert.equal(issue.code, 0, issue.stderr);
          const issued = JSON.parse(issue.stdout);
          assert.equal(issued.profile, 'server+client');
          assert.equal(issued.keyType, keyType);
          assert.equal(issued.commonName, 'api.internal');
          assert.equal(issued.spiffeId, 'spiffe://sigil.internal/server/api.internal');
          assert.equal(mode(`${out}.key`), 0o600);
          assert.equal(mode(`${out}.pem`), 0o644);
          const chain = pemCertificates(readFileSync(`${out}.pem`, 'utf8'));
          assert.equal(chain.length, intermediate ? 2 : 1);
          if (intermediate) assert.equal(chain[1], readFileSync(join(ca, 'intermediate.pem'), 'utf8'));

          for (const purpose of ['sslserver', 'sslclient']) {
            const verify = await openssl([
              'verify',
              '-x509_strict',
              '-purpose',
              purpose,
              '-CAfile',
              join(ca, 'ca.pem'),
              '-untrusted',
              `${out}.pem`,
              `${out}.pem`,
            ]);
            assert.equal(verify.code, 0, `${verify.stdout}${verify.stderr}`);
            assert.match(verify.stdout, /: OK$/m);
          }
          const text = await openssl(['x509', '-in', `${out}.pem`, '-noout', '-text']);
          assert.match(text.stdout, /Subject: CN = api\.internal/);
          assert.match(text.stdout, /URI:spiffe:\/\/sigil\.internal\/server\/api\.internal/);
          assert.match(text.stdout, /DNS:api\.internal, DNS:localhost/);
          assert.match(text.stdout, /IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1/);
          assert.match(text.stdout, /TLS Web Server Authentication, TLS Web Client Authentication/);
          assert.match(text.stdout, /CA:FALSE/);
          const certificateKey = await publicKeyOf(['x509', '-in', `${out}.pem`, '-noout', '-pubkey']);
          const fileKey = await publicKeyOf(['pkey', '-in', `${out}.key`, '-pubout']);
          assert.equal(certificateKey, fileKey);
        });
      }
    }
  });

  describe('pki issue', { concurrency: 2 }, () => {
    test('--client alone: clientAuth only, SPIFFE ID from --name', async () => {
      const dir = tempDir();
      makeCa(join(dir, 'ca'));
      const result = await sigil([
        'pki',
        'issue',
        '--dir',
        join(dir, 'ca'),
        '--client',
        '--name',
        'alice smith',
        '--email',
        'alice@example.com',
        '--out',
        join(dir, 'alice'),
      ]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /issued a client certificate for "alice smith"/);
      const text = await openssl(['x509', '-in', join(dir, 'alice.pem'), '-noout', '-text']);
      assert.match(text.stdout, /URI:spiffe:\/\/sigil\.internal\/client\/alice-smith/);
      assert.match(text.stdout, /email:alice@example\.com/);
      assert.match(text.stdout, /TLS Web Client Authentication/);
      assert.doesNotMatch(text.stdout, /TLS Web Server Authentication/);
      const verify = await openssl([
        'verify',
        '-x509_strict',
        '-purpose',
        'sslclient',
        '-CAfile',
        join(dir, 'ca', 'ca.pem'),
        join(dir, 'alice.pem'),
      ]);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    });

    test('--spiffe-id is used as given, and --key-type overrides the CA key type', async () => {
      const dir = tempDir();
      makeCa(join(dir, 'ca'), { trustDomain: 'prod.example.com' });
      const result = await sigil([
        'pki',
        'issue',
        '--dir',
        join(dir, 'ca'),
        '--server',
        '--dns',
        'api.prod.example.com',
        '--spiffe-id',
        'spiffe://prod.example.com/ns/prod/sa/api',
        '--key-type',
        'ed25519',
        '--ttl',
        '2h',
        '--out',
        join(dir, 'api'),
        '--json',
      ]);
      assert.equal(result.code, 0, result.stderr);
      const issued = JSON.parse(result.stdout);
      assert.equal(issued.spiffeId, 'spiffe://prod.example.com/ns/prod/sa/api');
      assert.equal(issued.keyType, 'ed25519');
      const lifetime = Date.parse(issued.certificate.notAfter) - Date.parse(issued.certificate.notBefore);
      assert.ok(lifetime > 7_000_000 && lifetime < 7_400_000, `lifetime ${lifetime}`);
      const text = await openssl(['x509', '-in', join(dir, 'api.pem'), '-noout', '-text']);
      assert.match(
        text.stdout,
        /URI:spiffe:\/\/prod\.example\.com\/ns\/prod\/sa\/api, DNS:api\.prod\.example\.com/,
      );
      assert.match(text.stdout, /ED25519/);
    });

    test('--csr: key and names from the verified request, command-line names added, no key written', async () => {
      const dir = tempDir();
      makeCa(join(dir, 'ca'), { intermediate: true });
      const req = await openssl([
        'req',
        '-new',
        ...NEW_P256_KEY,
        '-keyout',
        join(dir, 'node.key'),
        '-out',
        join(dir, 'node.csr'),
        '-subj',
        '/CN=node-1',
        '-addext',
        'subjectAltName=DNS:node-1.internal,URI:spiffe://sigil.internal/node/node-1',
      ]);
      assert.equal(req.code, 0, req.stderr);
      const result = await sigil([
        'pki',
        'issue',
        '--dir',
        join(dir, 'ca'),
        '--server',
        '--client',
        '--csr',
        join(dir, 'node.csr'),
        '--dns',
        'node-1.example.com',
        '--out',
        join(dir, 'node-1'),
        '--json',
      ]);
      assert.equal(result.code, 0, result.stderr);
      const issued = JSON.parse(result.stdout);
      assert.equal(issued.key, null);
      assert.equal(issued.commonName, 'node-1.internal');
      assert.equal(issued.spiffeId, 'spiffe://sigil.internal/node/node-1');
      assert.equal(existsSync(join(dir, 'node-1.key')), false);
      const text = await openssl(['x509', '-in', join(dir, 'node-1.pem'), '-noout', '-text']);
      assert.match(
        text.stdout,
        /URI:spiffe:\/\/sigil\.internal\/node\/node-1, DNS:node-1\.internal, DNS:node-1\.example\.com/,
      );
      const certificateKey = await publicKeyOf(['x509', '-in', join(dir, 'node-1.pem'), '-noout', '-pubkey']);
      assert.equal(certificateKey, await publicKeyOf(['pkey', '-in', join(dir, 'node.key'), '-pubout']));
      const verify = await openssl([
        'verify',
        '-x509_strict',
        '-CAfile',
        join(dir, 'ca', 'ca.pem'),
        '-untrusted',
        join(dir, 'node-1.pem'),
        join(dir, 'node-1.pem'),
      ]);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    });

    test('a lifetime past the CA is cut to it, with a warning', async () => {
      const dir = tempDir();
      makeCa(join(dir, 'ca')); // one year
      const result = await sigil([
        'pki',
        'issue',
        '--dir',
        join(dir, 'ca'),
        '--server',
        '--dns',
        'long.internal',
        '--ttl',
        '2y',
        '--out',
        join(dir, 'long'),
        '--json',
      ]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stderr, /^sigil: warning: the lifetime was cut to end with the issuing CA/m);
      const issued = JSON.parse(result.stdout);
      assert.equal(issued.clamped, true);
      const root = await openssl(['x509', '-in', join(dir, 'ca', 'root.pem'), '-noout', '-enddate']);
      const leaf = await openssl(['x509', '-in', join(dir, 'long.pem'), '-noout', '-enddate']);
      assert.equal(leaf.stdout, root.stdout);
    });

    test('SIGIL_CA_DIR stands in for --dir, and --dir overrides it', async () => {
      const dir = tempDir();
      makeCa(join(dir, 'ca'));
      const fromEnv = await sigil(
        ['pki', 'issue', '--server', '--dns', 'a.internal', '--out', join(dir, 'a')],
        {
          SIGIL_CA_DIR: join(dir, 'ca'),
        },
      );
      assert.equal(fromEnv.code, 0, fromEnv.stderr);
      const overridden = await sigil(
        [
          'pki',
          'issue',
          '--dir',
          join(dir, 'ca'),
          '--server',
          '--dns',
          'b.internal',
          '--out',
          join(dir, 'b'),
        ],
        { SIGIL_CA_DIR: join(dir, 'nowhere') },
      );
      assert.equal(overridden.code, 0, overridden.stderr);
    });
  });

  describe('encrypted CA keys', { concurrency: 2 }, () => {
    test('init --passphrase-file encrypts; issue reads it from the file or SIGIL_CA_PASSPHRASE', async () => {
      const dir = tempDir();
      const ca = join(dir, 'ca');
      const passphraseFile = join(dir, 'passphrase');
      writeFileSync(passphraseFile, 'correct horse battery\n');
      const init = await sigil([
        'pki',
        'init',
        '--dir',
        ca,
        '--intermediate',
        '--passphrase-file',
        passphraseFile,
      ]);
      assert.equal(init.code, 0, init.stderr);
      assert.doesNotMatch(init.stdout + init.stderr, /correct horse/);
      for (const key of ['root.key', 'intermediate.key']) {
        const pem = readFileSync(join(ca, key), 'utf8');
        assert.match(pem, /^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
        const check = await openssl([
          'pkey',
          '-in',
          join(ca, key),
          '-passin',
          `file:${passphraseFile}`,
          '-noout',
        ]);
        assert.equal(check.code, 0, check.stderr);
      }
      const withFile = await sigil([
        'pki',
        'issue',
        '--dir',
        ca,
        '--server',
        '--dns',
        'a.internal',
        '--passphrase-file',
        passphraseFile,
        '--out',
        join(dir, 'a'),
      ]);
      assert.equal(withFile.code, 0, withFile.stderr);
      assert.match(readFileSync(join(dir, 'a.key'), 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
      const withEnv = await sigil(
        ['pki', 'issue', '--dir', ca, '--server', '--dns', 'b.internal', '--out', join(dir, 'b')],
        {
          SIGIL_CA_PASSPHRASE: 'correct horse battery',
        },
      );
      assert.equal(withEnv.code, 0, withEnv.stderr);
    });
  });

  describe('pki crl', { concurrency: 2 }, () => {
    test('revocations signed by the intermediate and the root; openssl honours them', async () => {
      const dir = tempDir();
      const ca = join(dir, 'ca');
      makeCa(ca, { intermediate: true });
      const issue = async (name: string) => {
        const result = await sigil([
          'pki',
          'issue',
          '--dir',
          ca,
          '--server',
          '--dns',
          name,
          '--out',
          join(dir, name),
          '--json',
        ]);
        assert.equal(result.code, 0, result.stderr);
        return JSON.parse(result.stdout).certificate.serial as string;
      };
      const revokedSerial = await issue('revoked.internal');
      await issue('good.internal');

      const intermediateCrl = join(dir, 'intermediate.crl');
      const crl = await sigil([
        'pki',
        'crl',
        '--dir',
        ca,
        '--revoke',
        `0x${revokedSerial}:keyCompromise`,
        '--next-update',
        '3d',
        '--out',
        intermediateCrl,
        '--json',
      ]);
      assert.equal(crl.code, 0, crl.stderr);
      const signed = JSON.parse(crl.stdout);
      assert.equal(signed.crlNumber, 1);
      assert.deepEqual(signed.revoked, [{ serial: revokedSerial, reason: 'keyCompromise' }]);
      assert.equal(JSON.parse(readFileSync(join(ca, 'sigil-ca.json'), 'utf8')).crlNumber, 1);
      assert.match(readFileSync(intermediateCrl, 'utf8'), /^-----BEGIN X509 CRL-----/);

      const rootCrl = join(dir, 'root.crl');
      const empty = await sigil(['pki', 'crl', '--dir', ca, '--root', '--out', rootCrl]);
      assert.equal(empty.code, 0, empty.stderr);
      assert.match(empty.stdout, /CRL number 2/);
      assert.equal(JSON.parse(readFileSync(join(ca, 'sigil-ca.json'), 'utf8')).crlNumber, 2);

      const text = await openssl([
        'crl',
        '-in',
        intermediateCrl,
        '-noout',
        '-text',
        '-CAfile',
        join(ca, 'intermediate.pem'),
      ]);
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stderr + text.stdout, /verify OK/);
      assert.match(text.stdout, new RegExp(`Serial Number: 0?${revokedSerial.toUpperCase()}`));
      assert.match(text.stdout, /Key Compromise/);
      assert.match(text.stdout, /X509v3 CRL Number: \n\s+1/);
      const rootText = await openssl([
        'crl',
        '-in',
        rootCrl,
        '-noout',
        '-text',
        '-CAfile',
        join(ca, 'ca.pem'),
      ]);
      assert.match(rootText.stderr + rootText.stdout, /verify OK/);
      assert.match(rootText.stdout, /No Revoked Certificates/);

      const verify = (name: string) =>
        openssl([
          'verify',
          '-crl_check_all',
          '-CAfile',
          join(ca, 'ca.pem'),
          '-CRLfile',
          intermediateCrl,
          '-CRLfile',
          rootCrl,
          '-untrusted',
          join(dir, `${name}.pem`),
          join(dir, `${name}.pem`),
        ]);
      const good = await verify('good.internal');
      assert.equal(good.code, 0, good.stdout + good.stderr);
      const revoked = await verify('revoked.internal');
      assert.notEqual(revoked.code, 0);
      assert.match(revoked.stdout + revoked.stderr, /certificate revoked/);

      const der = join(dir, 'crl.der');
      const derResult = await sigil([
        'pki',
        'crl',
        '--dir',
        ca,
        '--der',
        '--revoke',
        revokedSerial,
        '--out',
        der,
      ]);
      assert.equal(derResult.code, 0, derResult.stderr);
      const derText = await openssl(['crl', '-inform', 'DER', '-in', der, '-noout', '-text']);
      assert.equal(derText.code, 0, derText.stderr);
      assert.match(derText.stdout, /X509v3 CRL Number: \n\s+3/);
    });
  });

  describe('pki inspect', () => {
    test('--json describes certificates, keys, CSRs and CRLs', async () => {
      const dir = tempDir();
      const ca = join(dir, 'ca');
      makeCa(ca, { intermediate: true });
      const issue = await sigil([
        'pki',
        'issue',
        '--dir',
        ca,
        '--server',
        '--dns',
        'x.internal',
        '--out',
        join(dir, 'x'),
      ]);
      assert.equal(issue.code, 0, issue.stderr);
      const crl = await sigil(['pki', 'crl', '--dir', ca, '--out', join(dir, 'x.crl')]);
      assert.equal(crl.code, 0, crl.stderr);
      const req = await openssl([
        'req',
        '-new',
        '-key',
        join(dir, 'x.key'),
        '-subj',
        '/CN=x',
        '-out',
        join(dir, 'x.csr'),
      ]);
      assert.equal(req.code, 0, req.stderr);
      const result = await sigil([
        'pki',
        'inspect',
        '--json',
        join(dir, 'x.pem'),
        join(dir, 'x.key'),
        join(dir, 'x.csr'),
        join(dir, 'x.crl'),
      ]);
      assert.equal(result.code, 0, result.stderr);
      const files = JSON.parse(result.stdout);
      assert.deepEqual(
        files.map((f: { items: { kind: string }[] }) => f.items.map((i) => i.kind)),
        [['certificate', 'certificate'], ['private-key'], ['csr'], ['crl']],
      );
      assert.equal(files[0].items[0].spiffeId, 'spiffe://sigil.internal/server/x.internal');
      assert.doesNotMatch(result.stdout, /PRIVATE KEY-----/);
      const text = await sigil(['pki', 'inspect', join(dir, 'x.pem')]);
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /x\.internal/);
    });
  });

  describe('usage', { concurrency: 2 }, () => {
    for (const command of ['init', 'issue', 'inspect', 'crl', 'quickstart']) {
      test(`pki ${command} --help exits 0 with a description and examples`, async () => {
        const result = await sigil(['pki', command, '--help']);
        assert.equal(result.code, 0, result.stderr);
        assert.match(result.stdout, new RegExp(`Usage: sigil pki ${command}`));
        assert.match(result.stdout, /Examples:\n {2}\$ sigil pki/);
      });
    }

    test('an unknown option exits 2', async () => {
      const result = await sigil(['pki', 'init', '--dir', '/nonexistent/x', '--frobnicate']);
      assert.equal(result.code, 2);
      assert.match(result.stderr, /unknown option '--frobnicate'/);
    });

    test('issue without --server or --client exits 2', async () => {
      const dir = tempDir();
      const result = await sigil(['pki', 'issue', '--dir', dir, '--dns', 'a', '--out', join(dir, 'a')]);
      assert.equal(result.code, 2);
      assert.match(result.stderr, /choose --server and\/or --client/);
    });

    test('a missing required option exits 2', async () => {
      const result = await sigil(['pki', 'issue', '--server', '--out', '/tmp/x']);
      assert.equal(result.code, 2);
      assert.match(result.stderr, /required option '--dir <dir>' not specified/);
    });
  });
});
