// peerIdentity(call).subject: the leaf's subject DN as OpenSSL prints it with
// `-nameopt RFC2253` (most specific first, RFC 2253 escaping), checked against
// the openssl CLI on names with special characters and multi-valued RDNs.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { decodePem } from '../../src/pki/pem.ts';
import { EmbeddedCA } from '../../src/transport/embedded-ca.ts';
import { identityFromChain } from '../../src/transport/peer-identity.ts';
import { tempDir } from '../support/temp-dir.ts';

const dir = tempDir('sigil-subject-');

function opensslCertificate(subject: string, multivalue: boolean): string {
  const out = join(dir, `c${Math.random().toString(36).slice(2)}.pem`);
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      join(dir, 'k.pem'),
      '-out',
      out,
      '-days',
      '1',
      '-utf8',
      '-subj',
      subject,
      ...(multivalue ? ['-multivalue-rdn'] : []),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return out;
}

function opensslSubject(file: string): string {
  const text = execFileSync(
    'openssl',
    ['x509', '-in', file, '-noout', '-subject', '-nameopt', 'RFC2253,-esc_msb'],
    {
      encoding: 'utf8',
    },
  );
  return text.trim().replace(/^subject=/, '');
}

const der = (file: string) => decodePem(readFileSync(file, 'utf8'))[0].der;

describe('peer identity subject', () => {
  for (const [subject, multivalue] of [
    ['/O=sigil/CN=web-1', false],
    ['/C=DE/O=Acme\\, Inc./OU=a+b "quoted" <x>;y/CN=#not-hex', false],
    ['/O=sigil/CN=web-1+UID=42', true],
    ['/O=Zürich Ünïcode/CN= leading and trailing ', false],
  ] as const) {
    test(`matches openssl -nameopt RFC2253 for ${subject}`, () => {
      const file = opensslCertificate(subject, multivalue);
      assert.equal(identityFromChain([der(file)]).subject, opensslSubject(file));
    });
  }

  test("an embedded CA client leaf's subject is its common name", () => {
    const ca = EmbeddedCA.create({ addresses: ['localhost'] });
    try {
      const leaf = ca.issueClient('alice');
      assert.equal(identityFromChain([decodePem(leaf.certificateChain)[0].der]).subject, 'CN=alice');
    } finally {
      ca.close();
    }
  });
});
