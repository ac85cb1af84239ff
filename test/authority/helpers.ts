import { createHash, type KeyObject, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Authority, type AuthorityOptions, type OpenedAuthority } from '../../src/authority/authority.ts';
import { type Caller, callerFrom } from '../../src/authority/identities.ts';
import type { IssuedCertificateView } from '../../src/authority/issuance.ts';
import { readCertificates } from '../../src/pki/certificate.ts';
import { generateStoreKey } from '../../src/server/store-key.ts';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import type { Store } from '../../src/store/store.ts';
import { opensslIn } from '../support/openssl-in.ts';
import { pemOf } from '../support/pem.ts';
import { serialOf } from '../support/serials.ts';

export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;

/** A clock tests move by hand. */
export class TestClock {
  ms: number;
  constructor(start = Date.now()) {
    this.ms = start;
  }
  now = (): Date => new Date(this.ms);
  advance(ms: number): void {
    this.ms += ms;
  }
}

export interface Fixture {
  readonly dir: string;
  readonly store: Store;
  readonly storeKey: Buffer;
  readonly clock: TestClock;
  readonly opened: OpenedAuthority;
  readonly authority: Authority;
  readonly admin: Caller;
  /** Opens another Authority on the same store (a restart, or another replica). */
  reopen(overrides?: Partial<AuthorityOptions>): Promise<OpenedAuthority>;
  /** Runs openssl in the fixture directory. */
  openssl(...args: string[]): string;
  /** Writes a file into the fixture directory; returns its name. */
  write(name: string, content: string | Buffer): string;
  close(): Promise<void>;
}

export async function newFixture(overrides: Partial<AuthorityOptions> = {}): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-authority-'));
  const store = await openSqliteStore(join(dir, 'sigil.db'));
  await store.migrate();
  const storeKey = generateStoreKey();
  const clock = new TestClock();
  const authorities: Authority[] = [];
  const base: AuthorityOptions = {
    store,
    replicaId: 'r1',
    storeKey,
    trustDomain: 'example.test',
    serverAddresses: ['127.0.0.1:7443', 'localhost:7443'],
    now: clock.now,
    timers: false,
    onWarning: () => {},
    ...overrides,
  };
  const reopen = async (more: Partial<AuthorityOptions> = {}) => {
    const result = await Authority.open({ ...base, ...more });
    authorities.push(result.authority);
    return result;
  };
  const opened = await reopen();
  const bootstrapped = opened.bootstrapped;
  if (!bootstrapped) throw new Error('fixture expected a bootstrap');
  const admin = callerFromPem(bootstrapped.adminCertificatePem, opened.authority);
  const openssl = opensslIn(dir).opensslAll;
  const write = (name: string, content: string | Buffer): string => {
    writeFileSync(join(dir, name), content);
    return name;
  };
  return {
    dir,
    store,
    storeKey,
    clock,
    opened,
    authority: opened.authority,
    admin,
    reopen,
    openssl,
    write,
    close: async () => {
      for (const authority of authorities) await authority.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** What a caller is judged against: the authority's trust domain and CA certificates. */
export type CallerContext = Pick<Authority, 'trustDomain' | 'deploymentAuthorities'>;

/**
 * The Caller a service would build for a verified client certificate (leaf
 * first in the PEM): issuedByDeployment when one of the authority's CAs
 * signed it directly (checked by signature, as MtlsServer does); never a
 * delegate (admission is the transport's, tested elsewhere).
 */
export function callerFromPem(pem: string, authority: CallerContext): Caller {
  return callerFromDer(readCertificates(pem)[0], authority);
}

export function callerFromDer(der: Buffer, authority: CallerContext): Caller {
  const certificate = new X509Certificate(der);
  const uri = /URI:(spiffe:\/\/[^,\s]+)/.exec(certificate.subjectAltName ?? '');
  const issuedByDeployment = authority.deploymentAuthorities().some((ca) => {
    try {
      return certificate.checkIssued(ca) && certificate.verify(ca.publicKey);
    } catch {
      return false;
    }
  });
  return callerFrom(
    {
      spiffeId: uri ? uri[1] : null,
      serial: serialOf(certificate),
      fingerprint: createHash('sha256').update(der).digest('hex'),
      issuedByDeployment,
      delegateKey: null,
    },
    authority.trustDomain,
  );
}

export function callerFromIssued(issued: IssuedCertificateView, authority: CallerContext): Caller {
  return callerFromDer(issued.certificate, authority);
}

/** openssl verify -x509_strict of `leaf` (with its chain as untrusted) against the roots; returns openssl's output. */
export function opensslVerify(
  fixture: Fixture,
  issued: { certificate: Buffer; chain: readonly Buffer[] },
  roots: readonly Buffer[],
  extra: string[] = [],
): string {
  const tag = Math.random().toString(36).slice(2);
  const rootFile = fixture.write(`roots-${tag}.pem`, pemOf(...roots));
  const chainFile = fixture.write(`chain-${tag}.pem`, pemOf(...issued.chain));
  const leafFile = fixture.write(`leaf-${tag}.pem`, pemOf(issued.certificate));
  const untrusted = issued.chain.length > 0 ? ['-untrusted', chainFile] : [];
  return fixture.openssl('verify', '-x509_strict', ...extra, '-CAfile', rootFile, ...untrusted, leafFile);
}

export function keyOf(pair: { privateKey: KeyObject }): KeyObject {
  return pair.privateKey;
}
