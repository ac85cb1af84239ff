// The Store contract, as one suite every implementation must pass (SPIRE's
// datastore approach): sqlite.test.ts and postgres.test.ts each call
// storeContract() with a harness that opens a store on a fresh database.
// Nothing here knows which backend it is testing.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { afterEach, describe, test } from 'node:test';
import type { ErrorCode } from '../../src/errors.ts';
import type {
  CaRecord,
  CertificateFilter,
  CertificateRecord,
  DelegationRecord,
  NodeRecord,
  NodeState,
  ReserveResult,
  Store,
  StoreEvent,
  TokenRecord,
  UsageCeiling,
  UsageReservation,
} from '../../src/store/store.ts';
import { refusal } from '../support/refusals.ts';

export interface StoreFixture {
  /** A store on a fresh, empty database (migrated unless asked otherwise). */
  readonly store: Store;
  /** Another store object on the same database: another connection, or on PostgreSQL another replica. */
  openAnother(): Promise<Store>;
}

export interface FreshOptions {
  readonly migrate?: boolean;
  readonly onError?: (error: Error) => void;
}

/** A row written straight into a table with the driver, column by column (booleans as booleans). */
export interface LegacyRow {
  readonly table: string;
  readonly values: Readonly<Record<string, string | number | boolean | Buffer | null>>;
}

export interface StoreHarness {
  readonly name: string;
  /** Set when the backend cannot run here: every test skips, printing this reason. */
  readonly skip?: string;
  fresh(options?: FreshOptions): Promise<StoreFixture>;
  /**
   * A fresh database whose schema is at `version`: only the migrations up to
   * it applied (and recorded in schema_migrations) as migrate() would, then
   * `rows` inserted with the driver; and a store object on it, not migrated.
   */
  atSchemaVersion(version: number, rows: readonly LegacyRow[]): Promise<StoreFixture>;
}

const T0 = Date.UTC(2030, 0, 1);
const at = (seconds: number): Date => new Date(T0 + seconds * 1000);
const HOUR = 3600;

export function sampleCertificate(n: number, overrides: Partial<CertificateRecord> = {}): CertificateRecord {
  return {
    serial: (0x1000 + n).toString(16),
    subject: n % 5 === 0 ? '' : `CN=leaf ${n}`,
    sans: [`uri:spiffe://example.test/leaf/${n}`, `dns:leaf${n}.example.test`],
    profile: 'client',
    notBefore: at(0),
    notAfter: at(24 * HOUR),
    issuerId: 'replica:a:1',
    requester: 'spiffe://example.test/admin',
    der: Buffer.from(`certificate ${n} \u0000\u00ff`, 'latin1'),
    issuedAt: at(n),
    revokedAt: null,
    revocationReason: null,
    ...overrides,
  };
}

export function sampleToken(id: string, overrides: Partial<TokenRecord> = {}): TokenRecord {
  return {
    id,
    secretHash: Buffer.alloc(32, id.length),
    name: `token ${id}`,
    usesTotal: 1,
    usesLeft: 1,
    autoApprove: false,
    createdAt: at(0),
    expiresAt: at(HOUR),
    revokedAt: null,
    createdBy: 'spiffe://example.test/admin',
    ...overrides,
  };
}

export function sampleNode(id: string, tokenId: string, overrides: Partial<NodeRecord> = {}): NodeRecord {
  return {
    id,
    publicKey: Buffer.from(`spki of ${id}`),
    name: null,
    state: 'NEW',
    tokenId,
    createdAt: at(60),
    updatedAt: at(60),
    certificateSerial: null,
    ...overrides,
  };
}

function sampleCa(id: string, overrides: Partial<CaRecord> = {}): CaRecord {
  return {
    id,
    kind: id === 'root' ? 'root' : 'intermediate',
    replicaId: id === 'root' ? null : 'a',
    certificate: Buffer.from(`certificate of ${id}`),
    encryptedKey: Buffer.from(`encrypted key of ${id}`),
    notBefore: at(0),
    notAfter: at(365 * 24 * HOUR),
    createdAt: at(0),
    retiredAt: null,
    ...overrides,
  };
}

/** The trust domain of the sample delegations. */
const TD = 'example.org';
/** SPIFFE ID of the admin who revokes in the samples. */
const ADMIN = `spiffe://${TD}/admin`;

/**
 * The host-form SPIFFE ID the authority writes for a subtree key:
 * "/alice/carol" is spiffe://carol.alice.d.example.org and the workload key
 * "/alice/carol//web" is spiffe://carol.alice.d.example.org/web.
 */
export function delegatedSpiffeId(subtree: string): string {
  const workload = subtree.indexOf('//');
  const names = (workload < 0 ? subtree : subtree.slice(0, workload)).slice(1).split('/');
  const path = workload < 0 ? '' : subtree.slice(workload + 1);
  return `spiffe://${names.reverse().join('.')}.d.${TD}${path}`;
}

export function sampleDelegation(
  subtree: string,
  n: number,
  overrides: Partial<DelegationRecord> = {},
): DelegationRecord {
  const der = Buffer.from(`delegation ${n} of ${subtree} \u0000\u00ff`, 'latin1');
  return {
    fingerprint: createHash('sha256').update(der).digest('hex'),
    serial: (0x2000 + n).toString(16),
    subtree,
    spiffeId: delegatedSpiffeId(subtree),
    parentFingerprint: null,
    policy: '{"version":1,"permissions":["create","delegate"]}',
    isCa: true,
    notAfter: at(30 * 24 * HOUR),
    der,
    origin: 'issued',
    recordedAt: at(n),
    revokedAt: null,
    revocationReason: null,
    revokedBy: null,
    ...overrides,
  };
}

export function sampleReservation(
  subtree: string,
  holder: string,
  overrides: Partial<UsageReservation> = {},
): UsageReservation {
  return {
    holder,
    subtree,
    workloads: 1,
    cpus: [],
    memoryMiB: 512,
    blockMiB: 1024,
    createdAt: at(100),
    ...overrides,
  };
}

/** A ceiling on workloads (memory and block generous unless given). */
function ceiling(subtree: string, workloads: number, memoryMiB = 1 << 30, blockMiB = 1 << 30): UsageCeiling {
  return { subtree, workloads, memoryMiB, blockMiB };
}

/** Byte order of UTF-8, the order both stores keep subtree keys in. */
const byteOrder = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<void> {
  await assert.rejects(promise, refusal(code, message ?? /(?:)/));
}

/** Records a store's events; waitFor resolves when a matching one has arrived (fails after 10 s). */
function recordEvents(store: Store) {
  const events: StoreEvent[] = [];
  const waiters: { match: (e: StoreEvent) => boolean; resolve: (e: StoreEvent) => void }[] = [];
  const unsubscribe = store.subscribe((event) => {
    events.push(event);
    for (const waiter of [...waiters])
      if (waiter.match(event)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(event);
      }
  });
  return {
    events,
    unsubscribe,
    waitFor(match: (e: StoreEvent) => boolean, what: string): Promise<StoreEvent> {
      const seen = events.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${what} event arrived`)), 10_000);
        waiters.push({
          match,
          resolve: (event) => {
            clearTimeout(timer);
            resolve(event);
          },
        });
      });
    },
  };
}

const isCa = (caId: string) => (e: StoreEvent) => e.kind === 'ca' && e.caId === caId;

export function storeContract(harness: StoreHarness): void {
  describe(`Store contract: ${harness.name}`, { skip: harness.skip }, () => {
    let opened: Store[] = [];

    afterEach(async () => {
      const stores = opened;
      opened = [];
      for (const store of stores.reverse()) await store.close();
    });

    async function fresh(options?: FreshOptions) {
      const fixture = await harness.fresh(options);
      opened.push(fixture.store);
      return {
        store: fixture.store,
        async another(): Promise<Store> {
          const store = await fixture.openAnother();
          opened.push(store);
          return store;
        },
      };
    }

    /** Marks the end of a burst of events: once this CA event arrives, every earlier one has too. */
    async function settle(
      store: Store,
      events: ReturnType<typeof recordEvents>,
      name: string,
    ): Promise<void> {
      await store.putCa(sampleCa(name));
      await events.waitFor(isCa(name), `sentinel ${name}`);
    }

    // --- settings ---------------------------------------------------------

    test('getSetting returns null for a key never set', async () => {
      const { store } = await fresh();
      assert.equal(await store.getSetting('trust-domain'), null);
    });

    test('initSetting: the first writer wins, also across store objects and under concurrency', async () => {
      const { store, another } = await fresh();
      const other = await another();
      assert.equal(await store.initSetting('trust-domain', 'first.test'), 'first.test');
      assert.equal(await other.initSetting('trust-domain', 'second.test'), 'first.test');
      assert.equal(await other.getSetting('trust-domain'), 'first.test');

      const values = await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          (i % 2 ? store : other).initSetting('replica-seed', `value-${i}`),
        ),
      );
      assert.equal(new Set(values).size, 1, `every writer must see the one stored value, saw ${values}`);
      assert.equal(await store.getSetting('replica-seed'), values[0]);
    });

    // --- CAs --------------------------------------------------------------

    test('putCa stores CAs and listCas returns them field for field', async () => {
      const { store } = await fresh();
      const root = sampleCa('root', { encryptedKey: null });
      const intermediate = sampleCa('replica:a:1', { createdAt: at(10) });
      await store.putCa(intermediate);
      await store.putCa(root);
      assert.deepEqual(await store.listCas(), [root, intermediate]);
    });

    test('putCa replaces the CA with the same id (the root key taken offline)', async () => {
      const { store } = await fresh();
      await store.putCa(sampleCa('root'));
      const offline = sampleCa('root', { encryptedKey: null });
      await store.putCa(offline);
      assert.deepEqual(await store.listCas(), [offline]);
    });

    test('retireCa sets retiredAt once; retiring again keeps the first time; an unknown id is not_found', async () => {
      const { store } = await fresh();
      await store.putCa(sampleCa('replica:a:1'));
      await store.retireCa('replica:a:1', at(100));
      await store.retireCa('replica:a:1', at(200));
      const [ca] = await store.listCas();
      assert.deepEqual(ca.retiredAt, at(100));
      await rejectsWith(store.retireCa('replica:zz:9', at(100)), 'not_found', /replica:zz:9/);
    });

    test('putCa and retireCa publish ca events', async () => {
      const { store } = await fresh();
      const events = recordEvents(store);
      await store.putCa(sampleCa('replica:a:1'));
      await events.waitFor(isCa('replica:a:1'), 'ca (put)');
      await store.retireCa('replica:a:1', at(5));
      await settle(store, events, 'sentinel');
      assert.equal(events.events.filter(isCa('replica:a:1')).length, 2);
    });

    // --- certificates -------------------------------------------------------

    test('insertCertificate and getCertificate round-trip every field', async () => {
      const { store } = await fresh();
      const plain = sampleCertificate(1);
      const revoked = sampleCertificate(2, {
        revokedAt: at(50),
        revocationReason: 'keyCompromise',
        sans: [],
      });
      const emptySubject = sampleCertificate(5);
      for (const record of [plain, revoked, emptySubject]) await store.insertCertificate(record);
      assert.deepEqual(await store.getCertificate(plain.serial), plain);
      assert.deepEqual(await store.getCertificate(revoked.serial), revoked);
      assert.deepEqual(await store.getCertificate(emptySubject.serial), emptySubject);
      assert.equal(await store.getCertificate('abcdef'), null);
    });

    test('insertCertificate refuses a duplicate serial (already_exists) and keeps the first record', async () => {
      const { store } = await fresh();
      const first = sampleCertificate(1);
      await store.insertCertificate(first);
      await rejectsWith(
        store.insertCertificate(sampleCertificate(1, { subject: 'CN=impostor' })),
        'already_exists',
        new RegExp(first.serial),
      );
      assert.deepEqual(await store.getCertificate(first.serial), first);
    });

    test('concurrent inserts are each acknowledged, and a duplicate among them fails alone', async () => {
      const { store } = await fresh();
      await store.insertCertificate(sampleCertificate(1));
      // 50 inserts in flight at once (one group commit on SQLite), one of them a duplicate.
      const results = await Promise.allSettled(
        Array.from({ length: 50 }, (_, i) => store.insertCertificate(sampleCertificate(i + 1))),
      );
      assert.equal(results.filter((r) => r.status === 'rejected').length, 1);
      const rejected = results[0];
      assert.equal(rejected.status, 'rejected');
      assert.equal((rejected as PromiseRejectedResult).reason.code, 'already_exists');
      for (let i = 2; i <= 50; i++)
        assert.ok(await store.getCertificate(sampleCertificate(i).serial), `certificate ${i} stored`);
    });

    test('insertCertificate refuses a serial that is not canonical lower-case hex', async () => {
      const { store } = await fresh();
      for (const serial of ['0a1', 'AB12', '', 'xyz', '-1'])
        await rejectsWith(
          store.insertCertificate(sampleCertificate(1, { serial })),
          'invalid_argument',
          /serial/,
        );
      assert.deepEqual((await store.listCertificates({})).items, []);
    });

    test('listCertificates filters by requester, profile, issuer, revocation and validity, alone and combined', async () => {
      const { store } = await fresh();
      const records: CertificateRecord[] = [];
      for (let n = 0; n < 24; n++) {
        const record = sampleCertificate(n, {
          requester: n % 3 === 0 ? 'node-a' : n % 3 === 1 ? 'node-b' : 'spiffe://example.test/admin',
          profile: n % 4 === 0 ? 'server' : 'node',
          issuerId: n % 2 === 0 ? 'replica:a:1' : 'replica:b:1',
          notAfter: at(n < 12 ? 1000 : 100_000),
          revokedAt: n % 5 === 0 ? at(500) : null,
          revocationReason: n % 5 === 0 ? 'superseded' : null,
        });
        records.push(record);
        await store.insertCertificate(record);
      }
      const cases: [CertificateFilter, (r: CertificateRecord) => boolean][] = [
        [{}, () => true],
        [{ requester: 'node-a' }, (r) => r.requester === 'node-a'],
        [{ profile: 'server' }, (r) => r.profile === 'server'],
        [{ issuerId: 'replica:b:1' }, (r) => r.issuerId === 'replica:b:1'],
        [{ revoked: true }, (r) => r.revokedAt !== null],
        [{ revoked: false }, (r) => r.revokedAt === null],
        [{ validAt: at(1000) }, (r) => r.notAfter > at(1000)],
        [{ validAt: at(999) }, (r) => r.notAfter > at(999)],
        [
          { requester: 'node-b', issuerId: 'replica:b:1', revoked: false },
          (r) => r.requester === 'node-b' && r.issuerId === 'replica:b:1' && r.revokedAt === null,
        ],
        [
          { profile: 'node', validAt: at(5000), revoked: true },
          (r) => r.profile === 'node' && r.notAfter > at(5000) && r.revokedAt !== null,
        ],
        [{ requester: 'nobody' }, () => false],
      ];
      for (const [filter, predicate] of cases) {
        const page = await store.listCertificates(filter);
        const expected = records.filter(predicate);
        assert.deepEqual(page.items, expected, `filter ${JSON.stringify(filter)}`);
        assert.equal(page.nextPageToken, '');
      }
    });

    test('listCertificates pages through 250 certificates 100 at a time: 3 pages, no duplicates, no gaps', async () => {
      const { store } = await fresh();
      const records: CertificateRecord[] = [];
      for (let n = 0; n < 250; n++) {
        // Several certificates share an issuedAt, so the order's tie-breaker (the serial) is exercised.
        const record = sampleCertificate(n, { issuedAt: at(Math.floor((250 - n) / 7)) });
        records.push(record);
      }
      for (const record of records) await store.insertCertificate(record);
      const byPosition = (a: CertificateRecord, b: CertificateRecord) =>
        a.issuedAt.getTime() - b.issuedAt.getTime() ||
        (a.serial < b.serial ? -1 : a.serial > b.serial ? 1 : 0);
      const expected = [...records].sort(byPosition).map((r) => r.serial);

      const pages: string[][] = [];
      let pageToken = '';
      do {
        const page = await store.listCertificates({ pageSize: 100, pageToken });
        pages.push(page.items.map((r) => r.serial));
        pageToken = page.nextPageToken;
        assert.ok(pages.length <= 3, 'more pages than expected');
      } while (pageToken !== '');
      assert.deepEqual(
        pages.map((p) => p.length),
        [100, 100, 50],
      );
      const all = pages.flat();
      assert.equal(new Set(all).size, 250, 'no duplicates');
      assert.deepEqual(all, expected, 'every record, in (issuedAt, serial) order');

      assert.equal((await store.listCertificates({})).items.length, 100, 'the default page size is 100');
      assert.equal((await store.listCertificates({ pageSize: 1000 })).items.length, 250);
    });

    test('listCertificates pages with a filter, and a page that ends the list exactly has no next token', async () => {
      const { store } = await fresh();
      for (let n = 0; n < 60; n++)
        await store.insertCertificate(sampleCertificate(n, { requester: n % 2 === 0 ? 'even' : 'odd' }));
      const first = await store.listCertificates({ requester: 'even', pageSize: 20 });
      assert.equal(first.items.length, 20);
      assert.notEqual(first.nextPageToken, '');
      const second = await store.listCertificates({
        requester: 'even',
        pageSize: 10,
        pageToken: first.nextPageToken,
      });
      assert.equal(second.items.length, 10);
      assert.equal(second.nextPageToken, '', 'exactly 30 match: the second page is the last');
      assert.ok([...first.items, ...second.items].every((r) => r.requester === 'even'));
      assert.equal(new Set([...first.items, ...second.items].map((r) => r.serial)).size, 30);
    });

    test('listCertificates refuses a bad page size or a malformed page token (invalid_argument)', async () => {
      const { store } = await fresh();
      for (let n = 0; n < 3; n++) await store.insertCertificate(sampleCertificate(n));
      for (const pageSize of [0, -1, 1001, 2.5, Number.NaN])
        await rejectsWith(store.listCertificates({ pageSize }), 'invalid_argument', /page size/);
      const good = (await store.listCertificates({ pageSize: 1 })).nextPageToken;
      const forged = [
        'not a token',
        Buffer.from('12.xyz').toString('base64url'),
        Buffer.from("1'; DROP TABLE certificates; --.1").toString('base64url'),
        Buffer.from('-5.1001').toString('base64url'),
        `${good}A`,
        `${good}=`,
      ];
      for (const pageToken of forged)
        await rejectsWith(store.listCertificates({ pageToken }), 'invalid_argument', /page token/);
      assert.equal((await store.listCertificates({ pageToken: good })).items.length, 2);
    });

    test('revokeCertificate: true once, then false; false for an unknown serial; records time and reason', async () => {
      const { store } = await fresh();
      const record = sampleCertificate(7);
      await store.insertCertificate(record);
      assert.equal(await store.revokeCertificate(record.serial, 'keyCompromise', at(300)), true);
      assert.equal(await store.revokeCertificate(record.serial, 'superseded', at(400)), false);
      assert.equal(await store.revokeCertificate('abc123', 'keyCompromise', at(300)), false);
      assert.deepEqual(await store.getCertificate(record.serial), {
        ...record,
        revokedAt: at(300),
        revocationReason: 'keyCompromise',
      });
      assert.equal(await store.getCertificate('abc123'), null);
    });

    test('revokeCertificate publishes exactly one revocation event, none for a repeat', async () => {
      const { store } = await fresh();
      const events = recordEvents(store);
      const record = sampleCertificate(7);
      await store.insertCertificate(record);
      await store.revokeCertificate(record.serial, 'keyCompromise', at(300));
      const event = await events.waitFor((e) => e.kind === 'revocation', 'revocation');
      assert.deepEqual(event, { kind: 'revocation', serials: [record.serial] });
      await store.revokeCertificate(record.serial, 'keyCompromise', at(301));
      await store.revokeCertificate('fff', 'keyCompromise', at(301));
      await settle(store, events, 'sentinel');
      assert.equal(events.events.filter((e) => e.kind === 'revocation').length, 1);
    });

    test("listRevoked returns one issuer's revoked certificates that have not expired", async () => {
      const { store } = await fresh();
      const now = at(5000);
      const records = [
        sampleCertificate(1, { notAfter: at(10_000) }), // revoked, valid: listed
        sampleCertificate(2, { notAfter: at(4999) }), // revoked, expired: not listed
        sampleCertificate(3, { notAfter: at(5000) }), // revoked, expires exactly now: not listed
        sampleCertificate(4, { notAfter: at(10_000) }), // not revoked
        sampleCertificate(5, { notAfter: at(10_000), issuerId: 'replica:b:1' }), // revoked, other issuer
        sampleCertificate(6, { notAfter: at(20_000) }), // revoked, valid: listed
      ];
      for (const record of records) await store.insertCertificate(record);
      for (const n of [1, 2, 3, 5, 6])
        await store.revokeCertificate(records[n - 1].serial, 'superseded', at(n));
      const listed = await store.listRevoked('replica:a:1', now);
      assert.deepEqual(listed.map((r) => r.serial).sort(), [records[0].serial, records[5].serial].sort());
      assert.ok(listed.every((r) => r.revocationReason === 'superseded' && r.revokedAt !== null));
      assert.deepEqual(await store.listRevoked('replica:c:1', now), []);
    });

    // --- tokens ---------------------------------------------------------------

    test('insertToken, getToken and listTokens round-trip every field', async () => {
      const { store } = await fresh();
      const single = sampleToken('tok-a');
      const multi = sampleToken('tok-b', {
        name: null,
        usesTotal: 5,
        usesLeft: 5,
        autoApprove: true,
        createdAt: at(1),
        secretHash: Buffer.from('00ff'.repeat(16), 'hex'),
      });
      await store.insertToken(multi);
      await store.insertToken(single);
      assert.deepEqual(await store.getToken('tok-a'), single);
      assert.deepEqual(await store.getToken('tok-b'), multi);
      assert.equal(await store.getToken('tok-c'), null);
      assert.deepEqual(await store.listTokens(), [single, multi]);
    });

    test('insertToken refuses a duplicate id (already_exists)', async () => {
      const { store } = await fresh();
      await store.insertToken(sampleToken('tok-a'));
      await rejectsWith(store.insertToken(sampleToken('tok-a', { usesLeft: 1 })), 'already_exists', /tok-a/);
    });

    test('revokeToken: true once, then false; false for an unknown id', async () => {
      const { store } = await fresh();
      await store.insertToken(sampleToken('tok-a'));
      assert.equal(await store.revokeToken('tok-a', at(30)), true);
      assert.equal(await store.revokeToken('tok-a', at(40)), false);
      assert.equal(await store.revokeToken('tok-zz', at(40)), false);
      assert.deepEqual((await store.getToken('tok-a'))?.revokedAt, at(30));
    });

    // --- registerNode -------------------------------------------------------------

    test('registerNode creates a NEW node, consumes one use and publishes a node event', async () => {
      const { store } = await fresh();
      const events = recordEvents(store);
      await store.insertToken(sampleToken('tok', { usesTotal: 3, usesLeft: 3 }));
      const node = sampleNode('node-1', 'tok', { name: 'worker-1' });
      const result = await store.registerNode('tok', node, at(120));
      assert.deepEqual(result, { outcome: 'created', node });
      assert.deepEqual(await store.getNode('node-1'), node);
      assert.equal((await store.getToken('tok'))?.usesLeft, 2);
      const event = await events.waitFor((e) => e.kind === 'node', 'node');
      assert.deepEqual(event, { kind: 'node', nodeId: 'node-1', state: 'NEW' });
    });

    test('registerNode with an already registered key returns the existing node and consumes nothing', async () => {
      const { store } = await fresh();
      await store.insertToken(sampleToken('tok', { usesTotal: 2, usesLeft: 2 }));
      const node = sampleNode('node-1', 'tok');
      await store.registerNode('tok', node, at(120));
      const again = await store.registerNode(
        'tok',
        sampleNode('node-1', 'tok', { name: 'changed' }),
        at(130),
      );
      assert.deepEqual(again, { outcome: 'existing', node });
      assert.equal((await store.getToken('tok'))?.usesLeft, 1);
    });

    test('registerNode refuses a used-up token and changes nothing', async () => {
      const { store } = await fresh();
      await store.insertToken(sampleToken('tok'));
      assert.equal(
        (await store.registerNode('tok', sampleNode('node-1', 'tok'), at(120))).outcome,
        'created',
      );
      assert.deepEqual(await store.registerNode('tok', sampleNode('node-2', 'tok'), at(121)), {
        outcome: 'token-unusable',
      });
      assert.equal(await store.getNode('node-2'), null);
      assert.equal((await store.getToken('tok'))?.usesLeft, 0);
    });

    test('registerNode refuses an expired token, expiring exactly now included', async () => {
      const { store } = await fresh();
      await store.insertToken(sampleToken('tok', { expiresAt: at(HOUR) }));
      assert.equal(
        (await store.registerNode('tok', sampleNode('node-1', 'tok'), at(HOUR))).outcome,
        'token-unusable',
      );
      assert.equal(
        (await store.registerNode('tok', sampleNode('node-1', 'tok'), at(HOUR + 1))).outcome,
        'token-unusable',
      );
      assert.equal(await store.getNode('node-1'), null);
      assert.equal((await store.getToken('tok'))?.usesLeft, 1);
      assert.equal(
        (await store.registerNode('tok', sampleNode('node-1', 'tok'), at(HOUR - 1))).outcome,
        'created',
      );
    });

    test('registerNode refuses a revoked token', async () => {
      const { store } = await fresh();
      await store.insertToken(sampleToken('tok', { usesTotal: 5, usesLeft: 5 }));
      await store.revokeToken('tok', at(10));
      assert.equal(
        (await store.registerNode('tok', sampleNode('node-1', 'tok'), at(20))).outcome,
        'token-unusable',
      );
      assert.equal(await store.getNode('node-1'), null);
      assert.equal((await store.getToken('tok'))?.usesLeft, 5);
    });

    test('registerNode refuses an unknown token', async () => {
      const { store } = await fresh();
      assert.equal(
        (await store.registerNode('nope', sampleNode('node-1', 'nope'), at(20))).outcome,
        'token-unusable',
      );
      assert.deepEqual(await store.listNodes(), []);
    });

    test('registerNode refuses a node record that names another token (invalid_argument)', async () => {
      const { store } = await fresh();
      await store.insertToken(sampleToken('tok'));
      await rejectsWith(store.registerNode('tok', sampleNode('node-1', 'other'), at(20)), 'invalid_argument');
      assert.equal((await store.getToken('tok'))?.usesLeft, 1);
    });

    test('no double spend: 20 concurrent registrations of distinct keys on a single-use token create one node', async () => {
      const { store, another } = await fresh();
      const stores = [store, await another(), await another()];
      await store.insertToken(sampleToken('tok'));
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          stores[i % stores.length].registerNode('tok', sampleNode(`node-${i}`, 'tok'), at(120)),
        ),
      );
      const created = results.filter((r) => r.outcome === 'created');
      assert.equal(created.length, 1, `outcomes: ${results.map((r) => r.outcome)}`);
      assert.equal(results.filter((r) => r.outcome === 'token-unusable').length, 19);
      assert.equal((await store.listNodes()).length, 1);
      assert.equal((await store.getToken('tok'))?.usesLeft, 0);
    });

    test('no double spend: 20 concurrent registrations on a 3-use token create exactly three nodes', async () => {
      const { store, another } = await fresh();
      const stores = [store, await another()];
      await store.insertToken(sampleToken('tok', { usesTotal: 3, usesLeft: 3 }));
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          stores[i % stores.length].registerNode('tok', sampleNode(`node-${i}`, 'tok'), at(120)),
        ),
      );
      assert.equal(results.filter((r) => r.outcome === 'created').length, 3);
      assert.equal((await store.listNodes()).length, 3);
      assert.equal((await store.getToken('tok'))?.usesLeft, 0);
    });

    test('the same key registered concurrently: one created, the rest existing, the token used once', async () => {
      const { store, another } = await fresh();
      const stores = [store, await another()];
      await store.insertToken(sampleToken('tok', { usesTotal: 5, usesLeft: 5 }));
      const node = sampleNode('node-1', 'tok');
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => stores[i % stores.length].registerNode('tok', node, at(120))),
      );
      assert.equal(
        results.filter((r) => r.outcome === 'created').length,
        1,
        `outcomes: ${results.map((r) => r.outcome)}`,
      );
      assert.equal(results.filter((r) => r.outcome === 'existing').length, 9);
      for (const result of results)
        assert.ok(result.outcome !== 'token-unusable' && result.node.id === 'node-1');
      assert.equal((await store.getToken('tok'))?.usesLeft, 4);
    });

    test('the same key registered concurrently on a single-use token: one created, the rest existing', async () => {
      const { store, another } = await fresh();
      const stores = [store, await another()];
      await store.insertToken(sampleToken('tok'));
      const node = sampleNode('node-1', 'tok');
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => stores[i % stores.length].registerNode('tok', node, at(120))),
      );
      assert.deepEqual(results.map((r) => r.outcome).sort(), ['created', ...Array(9).fill('existing')]);
    });

    // --- node state ---------------------------------------------------------------

    async function withNode(store: Store, id = 'node-1'): Promise<NodeRecord> {
      await store.insertToken(sampleToken(`tok-${id}`));
      const result = await store.registerNode(`tok-${id}`, sampleNode(id, `tok-${id}`), at(60));
      assert.equal(result.outcome, 'created');
      return result.node;
    }

    test('transitionNode moves NEW to UP, recording the certificate serial and the time', async () => {
      const { store } = await fresh();
      const node = await withNode(store);
      const up = await store.transitionNode('node-1', ['NEW'], 'UP', {
        certificateSerial: 'c0ffee',
        at: at(200),
      });
      const expected = { ...node, state: 'UP', certificateSerial: 'c0ffee', updatedAt: at(200) };
      assert.deepEqual(up, expected);
      assert.deepEqual(await store.getNode('node-1'), expected);
    });

    test('transitionNode is compare-and-set: a node in another state or an unknown node gives null and stays', async () => {
      const { store } = await fresh();
      await withNode(store);
      const up = await store.transitionNode('node-1', ['NEW'], 'UP', {
        certificateSerial: 'c0ffee',
        at: at(200),
      });
      assert.equal(
        await store.transitionNode('node-1', ['NEW'], 'UP', { certificateSerial: 'bad', at: at(300) }),
        null,
      );
      assert.equal(await store.transitionNode('node-1', ['REVOKED'], 'NEW', { at: at(300) }), null);
      assert.deepEqual(await store.getNode('node-1'), up);
      assert.equal(await store.transitionNode('node-unknown', ['NEW', 'UP'], 'UP', { at: at(300) }), null);
      assert.equal(await store.getNode('node-unknown'), null);
    });

    test('transitionNode without a serial keeps the previous one; a renewal (UP to UP) updates it', async () => {
      const { store } = await fresh();
      await withNode(store);
      await store.transitionNode('node-1', ['NEW'], 'UP', { certificateSerial: 'aa', at: at(200) });
      const renewed = await store.transitionNode('node-1', ['UP'], 'UP', {
        certificateSerial: 'bb',
        at: at(300),
      });
      assert.equal(renewed?.certificateSerial, 'bb');
      const revoked = await store.transitionNode('node-1', ['NEW', 'UP'], 'REVOKED', { at: at(400) });
      assert.equal(revoked?.state, 'REVOKED');
      assert.equal(revoked?.certificateSerial, 'bb');
      assert.deepEqual(revoked?.updatedAt, at(400));
    });

    test('registration and every state change publish a node event, in order; refused or same-state transitions do not', async () => {
      const { store } = await fresh();
      const events = recordEvents(store);
      await withNode(store);
      await store.transitionNode('node-1', ['NEW'], 'UP', { certificateSerial: 'aa', at: at(200) });
      await store.transitionNode('node-1', ['NEW'], 'UP', { at: at(210) }); // refused
      await store.transitionNode('node-1', ['UP'], 'UP', { certificateSerial: 'bb', at: at(220) }); // renewal
      await store.transitionNode('node-1', ['UP'], 'REVOKED', { at: at(230) });
      await settle(store, events, 'sentinel');
      assert.deepEqual(
        events.events.filter((e) => e.kind === 'node'),
        [
          { kind: 'node', nodeId: 'node-1', state: 'NEW' },
          { kind: 'node', nodeId: 'node-1', state: 'UP' },
          { kind: 'node', nodeId: 'node-1', state: 'REVOKED' },
        ],
      );
    });

    test('transitionNode under concurrency: of 10 racing NEW-to-UP calls exactly one wins', async () => {
      const { store, another } = await fresh();
      const stores = [store, await another()];
      await withNode(store);
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          stores[i % 2].transitionNode('node-1', ['NEW'], 'UP', {
            certificateSerial: `a${i}`,
            at: at(200 + i),
          }),
        ),
      );
      const winners = results.filter((r) => r !== null);
      assert.equal(winners.length, 1);
      assert.deepEqual(await store.getNode('node-1'), winners[0]);
    });

    // --- a node's certificate and its transition, one write ----------------------

    test('insertNodeCertificate inserts the certificate and moves the node to it in one call', async () => {
      const { store } = await fresh();
      const node = await withNode(store);
      const certificate = sampleCertificate(1, { profile: 'node', requester: 'node-1' });
      const up = await store.insertNodeCertificate(certificate, {
        id: 'node-1',
        from: ['NEW'],
        to: 'UP',
        at: at(200),
      });
      const expected = { ...node, state: 'UP', certificateSerial: certificate.serial, updatedAt: at(200) };
      assert.deepEqual(up, expected);
      assert.deepEqual(await store.getNode('node-1'), expected);
      assert.deepEqual(await store.getCertificate(certificate.serial), certificate);
      // A renewal: UP to UP, pointed at the newer certificate.
      const renewed = await store.insertNodeCertificate(sampleCertificate(2), {
        id: 'node-1',
        from: ['UP'],
        to: 'UP',
        at: at(300),
      });
      assert.equal(renewed?.certificateSerial, sampleCertificate(2).serial);
      assert.deepEqual(renewed?.updatedAt, at(300));
      assert.deepEqual(await store.getCertificate(sampleCertificate(2).serial), sampleCertificate(2));
    });

    test('insertNodeCertificate for a node in another state or an unknown node gives null: the certificate is inserted, the node stays', async () => {
      const { store } = await fresh();
      await withNode(store);
      const revoked = await store.transitionNode('node-1', ['NEW'], 'REVOKED', { at: at(100) });
      assert.equal(
        await store.insertNodeCertificate(sampleCertificate(1), {
          id: 'node-1',
          from: ['UP'],
          to: 'UP',
          at: at(200),
        }),
        null,
      );
      assert.deepEqual(await store.getNode('node-1'), revoked);
      assert.deepEqual(await store.getCertificate(sampleCertificate(1).serial), sampleCertificate(1));
      assert.equal(
        await store.insertNodeCertificate(sampleCertificate(2), {
          id: 'node-unknown',
          from: ['UP'],
          to: 'UP',
          at: at(200),
        }),
        null,
      );
      assert.equal(await store.getNode('node-unknown'), null);
      assert.deepEqual(await store.getCertificate(sampleCertificate(2).serial), sampleCertificate(2));
    });

    test('insertNodeCertificate with a duplicate serial is refused ALREADY_EXISTS and the node is left as it was, no event', async () => {
      const { store } = await fresh();
      const events = recordEvents(store);
      await withNode(store);
      const up = await store.transitionNode('node-1', ['NEW'], 'UP', {
        certificateSerial: 'aa',
        at: at(100),
      });
      await store.insertCertificate(sampleCertificate(1));
      await rejectsWith(
        store.insertNodeCertificate(sampleCertificate(1, { subject: 'CN=other' }), {
          id: 'node-1',
          from: ['UP'],
          to: 'REVOKED',
          at: at(200),
        }),
        'already_exists',
        /a certificate with serial 1001 already exists/,
      );
      assert.deepEqual(await store.getNode('node-1'), up);
      assert.deepEqual(await store.getCertificate(sampleCertificate(1).serial), sampleCertificate(1));
      await settle(store, events, 'sentinel');
      assert.deepEqual(
        events.events.filter((e) => e.kind === 'node'),
        [
          { kind: 'node', nodeId: 'node-1', state: 'NEW' },
          { kind: 'node', nodeId: 'node-1', state: 'UP' },
        ],
      );
    });

    test('insertNodeCertificate publishes a node event when the state changes, none for a renewal or a refused step', async () => {
      const { store } = await fresh();
      const events = recordEvents(store);
      await withNode(store);
      const step = (from: NodeState, to: NodeState, n: number) =>
        store.insertNodeCertificate(sampleCertificate(n), {
          id: 'node-1',
          from: [from],
          to,
          at: at(200 + n),
        });
      await step('NEW', 'UP', 1);
      await step('UP', 'UP', 2); // renewal
      await step('NEW', 'UP', 3); // refused: the node is UP
      await settle(store, events, 'sentinel');
      assert.deepEqual(
        events.events.filter((e) => e.kind === 'node'),
        [
          { kind: 'node', nodeId: 'node-1', state: 'NEW' },
          { kind: 'node', nodeId: 'node-1', state: 'UP' },
        ],
      );
    });

    test('insertNodeCertificate under concurrency: 40 nodes renewing at once, each pointed at its own certificate', async () => {
      const { store } = await fresh();
      const ids = Array.from({ length: 40 }, (_, i) => `node-${i}`);
      for (const id of ids) {
        await withNode(store, id);
        await store.transitionNode(id, ['NEW'], 'UP', { certificateSerial: 'aa', at: at(100) });
      }
      const results = await Promise.all(
        ids.map((id, i) =>
          store.insertNodeCertificate(sampleCertificate(i, { requester: id }), {
            id,
            from: ['UP'],
            to: 'UP',
            at: at(200),
          }),
        ),
      );
      for (const [i, id] of ids.entries()) {
        assert.equal(results[i]?.certificateSerial, sampleCertificate(i).serial);
        assert.equal((await store.getNode(id))?.certificateSerial, sampleCertificate(i).serial);
        assert.equal((await store.getCertificate(sampleCertificate(i).serial))?.requester, id);
      }
    });

    test('listNodes lists every node, or those in one state', async () => {
      const { store } = await fresh();
      await withNode(store, 'node-1');
      await withNode(store, 'node-2');
      await withNode(store, 'node-3');
      await store.transitionNode('node-2', ['NEW'], 'UP', { certificateSerial: 'aa', at: at(200) });
      assert.deepEqual((await store.listNodes()).map((n) => n.id).sort(), ['node-1', 'node-2', 'node-3']);
      assert.deepEqual((await store.listNodes({ state: 'NEW' })).map((n) => n.id).sort(), [
        'node-1',
        'node-3',
      ]);
      assert.deepEqual(
        (await store.listNodes({ state: 'UP' })).map((n) => n.id),
        ['node-2'],
      );
      assert.deepEqual(await store.listNodes({ state: 'REVOKED' }), []);
    });

    // --- delegations ----------------------------------------------------------------

    test('recordDelegation stores every field and getDelegation returns it; an unknown fingerprint is null', async () => {
      const { store } = await fresh();
      const alice = sampleDelegation('/alice', 1);
      const carol = sampleDelegation('/alice/carol', 2, {
        parentFingerprint: alice.fingerprint,
        serial: '0',
        policy: null,
        isCa: false,
        origin: 'seen',
        notAfter: at(HOUR),
        revokedAt: at(50),
        revocationReason: 'keyCompromise',
        revokedBy: delegatedSpiffeId('/alice'),
      });
      const web = sampleDelegation('/alice/carol//web', 3, {
        parentFingerprint: carol.fingerprint,
        policy: null,
        isCa: false,
      });
      assert.equal(carol.spiffeId, 'spiffe://carol.alice.d.example.org');
      assert.equal(web.spiffeId, 'spiffe://carol.alice.d.example.org/web');
      assert.deepEqual(await store.recordDelegation(alice), alice);
      assert.deepEqual(await store.recordDelegation(carol), carol);
      assert.deepEqual(await store.recordDelegation(web), web);
      assert.deepEqual(await store.getDelegation(alice.fingerprint), alice);
      assert.deepEqual(await store.getDelegation(carol.fingerprint), carol);
      assert.deepEqual(await store.getDelegation(web.fingerprint), web);
      assert.equal(await store.getDelegation('0'.repeat(64)), null);
      assert.equal(await store.getDelegation('not a fingerprint'), null);
    });

    test('recordDelegation inserts only if absent: the first record wins, also across store objects and under concurrency', async () => {
      const { store, another } = await fresh();
      const other = await another();
      const first = sampleDelegation('/alice', 1);
      assert.deepEqual(await store.recordDelegation(first), first);
      const later = {
        ...first,
        origin: 'seen' as const,
        policy: null,
        recordedAt: at(99),
        serial: 'ff',
        subtree: '/alicia',
      };
      assert.deepEqual(await other.recordDelegation(later), first);
      assert.deepEqual(await store.getDelegation(first.fingerprint), first);

      const racing = Array.from({ length: 10 }, (_, i) =>
        sampleDelegation('/bob', 2, { recordedAt: at(200 + i) }),
      );
      const results = await Promise.all(
        racing.map((record, i) => (i % 2 ? store : other).recordDelegation(record)),
      );
      assert.equal(
        new Set(results.map((r) => r.recordedAt.getTime())).size,
        1,
        'every caller sees one record',
      );
      assert.ok(racing.some((r) => r.recordedAt.getTime() === results[0].recordedAt.getTime()));
      assert.deepEqual(await store.getDelegation(racing[0].fingerprint), results[0]);
      assert.equal((await store.listDelegations()).length, 2);
    });

    test('recordDelegation refuses a malformed record (invalid_argument) and stores nothing', async () => {
      const { store } = await fresh();
      const good = sampleDelegation('/alice', 1);
      const bad: [Partial<DelegationRecord>, RegExp][] = [
        [{ fingerprint: good.fingerprint.toUpperCase() }, /fingerprint/],
        [{ fingerprint: good.fingerprint.slice(2) }, /fingerprint/],
        [{ parentFingerprint: 'abc' }, /parentFingerprint/],
        [{ serial: '0a' }, /serial/],
        [{ subtree: '' }, /subtree/],
        [{ subtree: 'alice/carol' }, /subtree/],
        // A SPIFFE ID is not a subtree key.
        [{ subtree: good.spiffeId }, /subtree/],
        [{ subtree: undefined as unknown as string }, /subtree/],
        [{ spiffeId: '' }, /spiffeId/],
        [{ origin: 'forged' as DelegationRecord['origin'] }, /origin/],
        [{ revokedAt: at(5) }, /revoked/],
        [{ revokedAt: at(5), revocationReason: 'superseded' }, /revoked/],
        [{ notAfter: new Date(Number.NaN) }, /notAfter/],
      ];
      for (const [overrides, message] of bad)
        await rejectsWith(store.recordDelegation({ ...good, ...overrides }), 'invalid_argument', message);
      assert.deepEqual(await store.listDelegations(), []);
    });

    test('listDelegations: at or under a subtree key by whole segments, never by wildcard or case; ordered by subtree, then recordedAt', async () => {
      const { store } = await fresh();
      const records = {
        alice: sampleDelegation('/alice', 5),
        carolRenewed: sampleDelegation('/alice/carol', 3),
        carol: sampleDelegation('/alice/carol', 2),
        dave: sampleDelegation('/alice/carol/dave', 1),
        // Byte order puts "Zed" before "carol"; a locale-aware collation would not.
        zed: sampleDelegation('/alice/Zed', 4),
        alicia: sampleDelegation('/alicia', 6),
        aliceUnderscore: sampleDelegation('/alice_x', 7),
        aliceDash: sampleDelegation('/alice-x', 8),
        aliceDot: sampleDelegation('/alice.x', 9),
        aliceZero: sampleDelegation('/alice0', 10),
        alicePercent: sampleDelegation('/alice%x', 11),
        capital: sampleDelegation('/Alice', 12),
        bob: sampleDelegation('/bob', 13),
      };
      const all = Object.values(records);
      for (const record of all) await store.recordDelegation(record);
      const fingerprints = (list: readonly DelegationRecord[]) => list.map((r) => r.fingerprint);

      assert.deepEqual(await store.listDelegations({ under: '/alice' }), [
        records.alice,
        records.zed,
        records.carol,
        records.carolRenewed,
        records.dave,
      ]);
      assert.deepEqual(fingerprints(await store.listDelegations({ under: '/alice/carol' })), [
        records.carol.fingerprint,
        records.carolRenewed.fingerprint,
        records.dave.fingerprint,
      ]);
      assert.deepEqual(await store.listDelegations({ under: '/alice_x' }), [records.aliceUnderscore]);
      assert.deepEqual(await store.listDelegations({ under: '/Alice' }), [records.capital]);
      assert.deepEqual(await store.listDelegations({ under: '/alice%x' }), [records.alicePercent]);
      // LIKE wildcards are plain characters here: "_" and "%" match only themselves.
      for (const under of ['/al_ce', '/alic%', '/alice%', '/ALICE', '/alic', '/alice/'])
        assert.deepEqual(await store.listDelegations({ under }), [], `under ${under}`);
      // The top-level subtrees are disjoint and together hold every record, each once.
      const tops = [
        '/alice',
        '/alicia',
        '/alice_x',
        '/alice-x',
        '/alice.x',
        '/alice0',
        '/alice%x',
        '/Alice',
        '/bob',
      ];
      const union = (await Promise.all(tops.map((under) => store.listDelegations({ under })))).flat();
      assert.deepEqual(fingerprints(union).sort(), fingerprints(all).sort());

      const expected = [...all].sort(
        (a, b) => byteOrder(a.subtree, b.subtree) || a.recordedAt.getTime() - b.recordedAt.getTime(),
      );
      assert.deepEqual(fingerprints(await store.listDelegations()), fingerprints(expected));
      assert.deepEqual(fingerprints(await store.listDelegations({})), fingerprints(expected));
      await rejectsWith(store.listDelegations({ under: '' }), 'invalid_argument', /under/);
      // `at`: exactly one key, ordered by recordedAt; nothing beneath it.
      assert.deepEqual(fingerprints(await store.listDelegations({ at: '/alice/carol' })), [
        records.carol.fingerprint,
        records.carolRenewed.fingerprint,
      ]);
      assert.deepEqual(await store.listDelegations({ at: '/alice' }), [records.alice]);
      assert.deepEqual(await store.listDelegations({ at: '/alic' }), []);
      await rejectsWith(store.listDelegations({ at: records.alice.spiffeId }), 'invalid_argument', /at/);
      await rejectsWith(
        store.listDelegations({ at: '/alice', under: '/alice' }),
        'invalid_argument',
        /under or at, not both/,
      );
      // A SPIFFE ID is refused, not silently matched against nothing.
      await rejectsWith(
        store.listDelegations({ under: records.alice.spiffeId }),
        'invalid_argument',
        /under.*subtree key/,
      );
    });

    test('countDelegationsSince counts the records at or under a subtree key recorded at or after an instant', async () => {
      const { store } = await fresh();
      await store.recordDelegation(sampleDelegation('/alice', 10));
      await store.recordDelegation(sampleDelegation('/alice/carol', 20));
      await store.recordDelegation(sampleDelegation('/alice/carol/dave', 30));
      await store.recordDelegation(sampleDelegation('/alicia', 40));
      await store.recordDelegation(sampleDelegation('/alice_x', 50));
      assert.equal(await store.countDelegationsSince('/alice', at(0)), 3);
      assert.equal(await store.countDelegationsSince('/alice', at(20)), 2, 'recorded exactly then counts');
      assert.equal(await store.countDelegationsSince('/alice', at(21)), 1);
      assert.equal(await store.countDelegationsSince('/alice', at(31)), 0);
      assert.equal(await store.countDelegationsSince('/alice/carol', at(0)), 2);
      assert.equal(await store.countDelegationsSince('/alicia', at(0)), 1);
      assert.equal(await store.countDelegationsSince('/al_ce', at(0)), 0);
      // Across the disjoint top-level subtrees, each record counts once.
      let since35 = 0;
      for (const top of ['/alice', '/alicia', '/alice_x'])
        since35 += await store.countDelegationsSince(top, at(35));
      assert.equal(since35, 2);
      await rejectsWith(store.countDelegationsSince('', at(0)), 'invalid_argument', /under/);
      await rejectsWith(
        store.countDelegationsSince(delegatedSpiffeId('/alice'), at(0)),
        'invalid_argument',
        /under/,
      );
    });

    test('revokeDelegation: true once, then false (the first revocation kept); false for an unknown fingerprint', async () => {
      const { store } = await fresh();
      const record = sampleDelegation('/alice/carol', 1);
      const alice = delegatedSpiffeId('/alice');
      await store.recordDelegation(record);
      assert.equal(await store.revokeDelegation(record.fingerprint, 'keyCompromise', at(300), alice), true);
      assert.equal(
        await store.revokeDelegation(record.fingerprint, 'superseded', at(400), delegatedSpiffeId('/bob')),
        false,
      );
      assert.equal(await store.revokeDelegation('0'.repeat(64), 'keyCompromise', at(300), alice), false);
      const revoked = {
        ...record,
        revokedAt: at(300),
        revocationReason: 'keyCompromise',
        revokedBy: alice,
      };
      assert.deepEqual(await store.getDelegation(record.fingerprint), revoked);
      assert.equal(await store.getDelegation('0'.repeat(64)), null);

      const other = sampleDelegation('/alice/dan', 2);
      await store.recordDelegation(other);
      await rejectsWith(store.revokeDelegation(other.fingerprint, '', at(1), alice), 'invalid_argument');
      await rejectsWith(
        store.revokeDelegation(other.fingerprint, 'superseded', at(1), ''),
        'invalid_argument',
      );
      assert.deepEqual(await store.getDelegation(other.fingerprint), other);
    });

    test('revokeDelegation publishes one revocation event carrying "fp:<fingerprint>", none for a repeat', async () => {
      const { store } = await fresh();
      const events = recordEvents(store);
      const record = sampleDelegation('/alice', 1);
      const alice = delegatedSpiffeId('/alice');
      await store.recordDelegation(record);
      await store.revokeDelegation(record.fingerprint, 'keyCompromise', at(300), alice);
      const event = await events.waitFor((e) => e.kind === 'revocation', 'revocation');
      assert.deepEqual(event, { kind: 'revocation', serials: [`fp:${record.fingerprint}`] });
      await store.revokeDelegation(record.fingerprint, 'keyCompromise', at(301), alice);
      await store.revokeDelegation('f'.repeat(64), 'keyCompromise', at(301), alice);
      await settle(store, events, 'sentinel');
      assert.equal(events.events.filter((e) => e.kind === 'revocation').length, 1);
    });

    test('listRevokedDelegations returns the revoked records that have not expired', async () => {
      const { store } = await fresh();
      const now = at(5000);
      const records = [
        sampleDelegation('/a', 1, { notAfter: at(10_000) }), // revoked, valid: listed
        sampleDelegation('/b', 2, { notAfter: at(4999) }), // revoked, expired: not listed
        sampleDelegation('/c', 3, { notAfter: at(5000) }), // revoked, expires exactly now: not listed
        sampleDelegation('/d', 4, { notAfter: at(10_000) }), // not revoked
        sampleDelegation('/e', 5, { notAfter: at(20_000) }), // revoked first, valid: listed
      ];
      for (const record of records) await store.recordDelegation(record);
      for (const [n, when] of [
        [1, 40],
        [2, 30],
        [3, 20],
        [5, 10],
      ])
        await store.revokeDelegation(records[n - 1].fingerprint, 'superseded', at(when), ADMIN);
      const listed = await store.listRevokedDelegations(now);
      assert.deepEqual(
        listed.map((r) => [r.subtree, r.spiffeId]),
        [
          ['/e', 'spiffe://e.d.example.org'],
          ['/a', 'spiffe://a.d.example.org'],
        ],
      );
      assert.ok(listed.every((r) => r.revocationReason === 'superseded' && r.revokedBy === ADMIN));
      assert.deepEqual(await store.listRevokedDelegations(at(30_000)), []);
    });

    test('a workload key "/alice/carol//web" is at or under "/alice/carol" and "/alice", not "/alice/carolyn"; the sub-delegation "/alice/carol/dan" is not under it', async () => {
      const { store } = await fresh();
      const [alice, carol, web, dan, carolyn, carolynWeb] = [
        '/alice',
        '/alice/carol',
        '/alice/carol//web',
        '/alice/carol/dan',
        '/alice/carolyn',
        '/alice/carolyn//web',
      ];
      const leaf = { isCa: false, policy: null };
      const records = {
        alice: sampleDelegation(alice, 1),
        carol: sampleDelegation(carol, 2),
        web: sampleDelegation(web, 3, leaf),
        dan: sampleDelegation(dan, 4),
        carolyn: sampleDelegation(carolyn, 5),
        carolynWeb: sampleDelegation(carolynWeb, 6, leaf),
      };
      for (const record of Object.values(records)) await store.recordDelegation(record);
      const listed = async (under: string) => (await store.listDelegations({ under })).map((r) => r.subtree);

      // Byte order: the workload ("//web") sorts right after its delegation, before sub-delegations.
      assert.deepEqual(await listed(alice), [alice, carol, web, dan, carolyn, carolynWeb]);
      assert.deepEqual(await listed(carol), [carol, web, dan]);
      assert.deepEqual(await listed(carolyn), [carolyn, carolynWeb]);
      assert.deepEqual(await listed(web), [web]);
      assert.deepEqual(await listed(dan), [dan]);
      assert.deepEqual(await listed('/alice/carol//we'), []);
      assert.equal(await store.countDelegationsSince(alice, at(0)), 6);
      assert.equal(await store.countDelegationsSince(carol, at(0)), 3);
      assert.equal(await store.countDelegationsSince(carol, at(3)), 2, 'the workload leaf and Dan');
      assert.equal(await store.countDelegationsSince(carolyn, at(0)), 2);
      assert.equal(await store.countDelegationsSince(web, at(0)), 1);

      // Reservations follow the same keys: the workload is charged to Carol and Alice, never to Carolyn.
      const ceilingsOf = (...subtrees: string[]) => subtrees.map((subtree) => ceiling(subtree, 10));
      const webHolder = sampleReservation(web, 'pod-1');
      const danHolder = sampleReservation(dan, 'pod-1');
      const carolynHolder = sampleReservation(carolynWeb, 'pod-1');
      assert.equal((await store.reserveUsage(webHolder, ceilingsOf(alice, carol, web))).outcome, 'reserved');
      assert.equal((await store.reserveUsage(danHolder, ceilingsOf(alice, carol, dan))).outcome, 'reserved');
      assert.equal(
        (await store.reserveUsage(carolynHolder, ceilingsOf(alice, carolyn, carolynWeb))).outcome,
        'reserved',
      );
      assert.equal((await store.usageUnder(alice)).reservations, 3);
      assert.equal((await store.usageUnder(carol)).reservations, 2);
      assert.equal((await store.usageUnder(carolyn)).reservations, 1);
      assert.equal((await store.usageUnder(web)).reservations, 1);
      assert.equal((await store.usageUnder(dan)).reservations, 1);
      assert.deepEqual(await store.listReservations(carol), [webHolder, danHolder]);
      assert.deepEqual(await store.listReservations(web), [webHolder]);
      assert.deepEqual(await store.listReservations(carolyn), [carolynHolder]);

      // A ceiling must be at or above the reservation's key: the workload's is not above Dan, Carolyn's not above Carol's workload.
      await rejectsWith(
        store.reserveUsage(sampleReservation(dan, 'pod-2'), [ceiling(web, 10)]),
        'invalid_argument',
        /ceiling/,
      );
      await rejectsWith(
        store.reserveUsage(sampleReservation(web, 'pod-2'), [ceiling(carolyn, 10)]),
        'invalid_argument',
        /ceiling/,
      );
      // Carol's ceiling counts her workload and Dan: full at 2.
      assert.deepEqual(
        await store.reserveUsage(sampleReservation('/alice/carol//db', 'pod-1'), [ceiling(carol, 2)]),
        { outcome: 'exceeded', subtree: carol, resource: 'workloads', used: 2, limit: 2 },
      );
      // Carolyn's ceiling does not: room for one more there.
      assert.equal(
        (await store.reserveUsage(sampleReservation(carolyn, 'pod-2'), [ceiling(carolyn, 2)])).outcome,
        'reserved',
      );
    });

    test('migrating a store from schema version 2 files its path-form rows under subtree keys, and subtree queries find them', async () => {
      const old = (path: string) => `spiffe://example.org/d${path}`;
      // As schema version 2 wrote them: spiffe_id is the key, path-form.
      const alice = sampleDelegation('/alice', 1, { spiffeId: old('/alice') });
      const carol = sampleDelegation('/alice/carol', 2, {
        spiffeId: old('/alice/carol'),
        parentFingerprint: alice.fingerprint,
        isCa: false,
        origin: 'seen',
        revokedAt: at(50),
        revocationReason: 'keyCompromise',
        revokedBy: old('/alice'),
      });
      const alicia = sampleDelegation('/alicia', 3, { spiffeId: old('/alicia') });
      // A trust domain named "d": only the path's "/d/" counts.
      const inD = sampleDelegation('/bob', 4, { spiffeId: 'spiffe://d/d/bob' });
      // Not path-form: kept as it was.
      const stray = sampleDelegation('/x', 5, { spiffeId: 'spiffe://example.org/admin' });
      const strayMigrated = { ...stray, subtree: 'spiffe://example.org/admin' };
      const web = sampleReservation('/alice/carol', 'web', { cpus: [1], workloads: 2 });
      const db = sampleReservation('/alice', 'db', { cpus: [4] });
      const other = sampleReservation('/alicia', 'db');
      const delegationRow = (r: DelegationRecord): LegacyRow => ({
        table: 'delegations',
        values: {
          fingerprint: r.fingerprint,
          serial: r.serial,
          spiffe_id: r.spiffeId,
          parent_fingerprint: r.parentFingerprint,
          policy: r.policy,
          is_ca: r.isCa,
          not_after: r.notAfter.getTime(),
          der: r.der,
          origin: r.origin,
          recorded_at: r.recordedAt.getTime(),
          revoked_at: r.revokedAt?.getTime() ?? null,
          revocation_reason: r.revocationReason,
          revoked_by: r.revokedBy,
        },
      });
      const reservationRow = (r: UsageReservation): LegacyRow => ({
        table: 'usage_reservations',
        values: {
          spiffe_id: old(r.subtree),
          holder: r.holder,
          workloads: r.workloads,
          cpus: JSON.stringify(r.cpus),
          memory_mib: r.memoryMiB,
          block_mib: r.blockMiB,
          created_at: r.createdAt.getTime(),
        },
      });
      const fixture = await harness.atSchemaVersion(2, [
        ...[alice, carol, alicia, inD, stray].map(delegationRow),
        ...[web, db, other].map(reservationRow),
      ]);
      const store = fixture.store;
      opened.push(store);
      await store.migrate();

      // Every field survives; the key is derived, the SPIFFE ID kept as written.
      assert.deepEqual(await store.getDelegation(carol.fingerprint), carol);
      assert.deepEqual(await store.listDelegations(), [alice, carol, alicia, inD, strayMigrated]);
      assert.deepEqual(await store.listDelegations({ under: '/alice' }), [alice, carol]);
      assert.deepEqual(await store.listDelegations({ under: '/alice/carol' }), [carol]);
      assert.deepEqual(await store.listDelegations({ under: '/bob' }), [inD]);
      assert.equal(await store.countDelegationsSince('/alice', at(0)), 2);
      assert.deepEqual(await store.listRevokedDelegations(at(60)), [carol]);

      assert.deepEqual(await store.listReservations('/alice'), [db, web]);
      assert.deepEqual(await store.listReservations('/alicia'), [other]);
      assert.deepEqual(await store.usageUnder('/alice'), {
        workloads: 3,
        cpus: [1, 4],
        memoryMiB: 1024,
        blockMiB: 2048,
        reservations: 2,
      });
      // The renamed column is still the key, and the ceilings see the migrated usage.
      assert.deepEqual(await store.reserveUsage({ ...db, workloads: 9 }, []), {
        outcome: 'existing',
        reservation: db,
      });
      assert.deepEqual(
        await store.reserveUsage(sampleReservation('/alice/dan', 'w'), [ceiling('/alice', 3)]),
        {
          outcome: 'exceeded',
          subtree: '/alice',
          resource: 'workloads',
          used: 3,
          limit: 3,
        },
      );
      assert.equal(await store.releaseUsage('/alice/carol', 'web'), true);
      assert.equal(
        (await store.reserveUsage(sampleReservation('/alice/dan', 'w'), [ceiling('/alice', 3)])).outcome,
        'reserved',
      );

      // New records sit beside the migrated ones, and migrating again changes nothing.
      const leaf = sampleDelegation('/alice/carol//web', 6, { isCa: false, policy: null });
      assert.deepEqual(await store.recordDelegation(leaf), leaf);
      await store.migrate();
      assert.deepEqual(await store.listDelegations({ under: '/alice/carol' }), [carol, leaf]);
      const reopened = await fixture.openAnother();
      opened.push(reopened);
      assert.deepEqual(await reopened.listDelegations({ under: '/alice' }), [alice, carol, leaf]);
    });

    // --- usage reservations ------------------------------------------------------------

    test('reserveUsage reserves and returns the stored reservation; the same (subtree, holder) again is existing and changes nothing', async () => {
      const { store } = await fresh();
      const carol = '/alice/carol';
      const ceilings = [ceiling('/alice', 5), ceiling(carol, 5)];
      const web = sampleReservation(carol, 'web-1', { cpus: [3, 1], workloads: 2 });
      assert.deepEqual(await store.reserveUsage(web, ceilings), { outcome: 'reserved', reservation: web });
      const again = { ...web, workloads: 1, cpus: [7], memoryMiB: 1, createdAt: at(200) };
      assert.deepEqual(await store.reserveUsage(again, ceilings), { outcome: 'existing', reservation: web });
      // Held already: 'existing', even where a ceiling would now refuse it.
      assert.deepEqual(await store.reserveUsage({ ...web, workloads: 100 }, [ceiling('/alice', 0)]), {
        outcome: 'existing',
        reservation: web,
      });
      // The same holder name charged to another principal is another reservation.
      const dan = sampleReservation('/alice/dan', 'web-1');
      assert.deepEqual(await store.reserveUsage(dan, [ceiling('/alice', 5)]), {
        outcome: 'reserved',
        reservation: dan,
      });
      // No ceilings: reserved as long as it is not held.
      const free = sampleReservation('/zoe', 'db');
      assert.deepEqual(await store.reserveUsage(free, []), { outcome: 'reserved', reservation: free });
      assert.deepEqual(await store.listReservations('/alice'), [web, dan]);
      assert.equal((await store.usageUnder('/alice')).workloads, 3);
    });

    test('reserveUsage refuses what would exceed a ceiling, naming it, the resource, the use so far and the limit; exactly at the limit fits', async () => {
      const { store } = await fresh();
      const alice = '/alice';
      const ceilings = [ceiling(alice, 3, 4096, 8192)];
      const first = sampleReservation(alice, 'a', { workloads: 2, memoryMiB: 2048, blockMiB: 4096 });
      assert.equal((await store.reserveUsage(first, ceilings)).outcome, 'reserved');
      const cases: [Partial<UsageReservation>, ReserveResult][] = [
        [
          { workloads: 2, memoryMiB: 0, blockMiB: 0 },
          { outcome: 'exceeded', subtree: alice, resource: 'workloads', used: 2, limit: 3 },
        ],
        [
          { workloads: 1, memoryMiB: 2049, blockMiB: 0 },
          { outcome: 'exceeded', subtree: alice, resource: 'memoryMiB', used: 2048, limit: 4096 },
        ],
        [
          { workloads: 1, memoryMiB: 2048, blockMiB: 4097 },
          { outcome: 'exceeded', subtree: alice, resource: 'blockMiB', used: 4096, limit: 8192 },
        ],
      ];
      for (const [overrides, expected] of cases)
        assert.deepEqual(
          await store.reserveUsage(sampleReservation(alice, 'b', overrides), ceilings),
          expected,
          JSON.stringify(overrides),
        );
      assert.deepEqual(await store.listReservations(alice), [first], 'a refused reservation stores nothing');

      const exact = sampleReservation(alice, 'b', { workloads: 1, memoryMiB: 2048, blockMiB: 4096 });
      assert.deepEqual(await store.reserveUsage(exact, ceilings), {
        outcome: 'reserved',
        reservation: exact,
      });
      assert.deepEqual(await store.usageUnder(alice), {
        workloads: 3,
        cpus: [],
        memoryMiB: 4096,
        blockMiB: 8192,
        reservations: 2,
      });

      // The first ceiling broken is the one named, in the order given.
      const carol = '/alice/carol';
      const next = sampleReservation(carol, 'c');
      assert.deepEqual(await store.reserveUsage(next, [ceiling(alice, 3), ceiling(carol, 0)]), {
        outcome: 'exceeded',
        subtree: alice,
        resource: 'workloads',
        used: 3,
        limit: 3,
      });
      assert.deepEqual(await store.reserveUsage(next, [ceiling(carol, 0), ceiling(alice, 3)]), {
        outcome: 'exceeded',
        subtree: carol,
        resource: 'workloads',
        used: 0,
        limit: 0,
      });
      // A reservation of nothing still fits under a full ceiling.
      const nothing = sampleReservation(carol, 'd', { workloads: 0, memoryMiB: 0, blockMiB: 0 });
      assert.equal((await store.reserveUsage(nothing, [ceiling(alice, 3, 4096, 8192)])).outcome, 'reserved');
    });

    test('a ceiling on an ancestor is shared by its subtree: siblings under one parent share its workloads limit', async () => {
      const { store } = await fresh();
      const alice = '/alice';
      const carol = `${alice}/carol`;
      const dan = `${alice}/dan`;
      const ceilingsOf = (self: string) => [ceiling(alice, 3), ceiling(self, 2)];
      for (const holder of ['c1', 'c2'])
        assert.equal(
          (await store.reserveUsage(sampleReservation(carol, holder), ceilingsOf(carol))).outcome,
          'reserved',
        );
      assert.equal(
        (await store.reserveUsage(sampleReservation(dan, 'd1'), ceilingsOf(dan))).outcome,
        'reserved',
      );
      // Dan has room under his own ceiling (1 of 2) but Alice's is full with Carol's two and Dan's one.
      assert.deepEqual(await store.reserveUsage(sampleReservation(dan, 'd2'), ceilingsOf(dan)), {
        outcome: 'exceeded',
        subtree: alice,
        resource: 'workloads',
        used: 3,
        limit: 3,
      });
      // A holder beneath Dan is charged to Dan's and Alice's subtrees too.
      assert.deepEqual(
        await store.reserveUsage(sampleReservation(`${dan}/erin`, 'e1'), [
          ...ceilingsOf(dan),
          ceiling(`${dan}/erin`, 5),
        ]),
        { outcome: 'exceeded', subtree: alice, resource: 'workloads', used: 3, limit: 3 },
      );
      assert.equal((await store.usageUnder(alice)).workloads, 3);
      assert.equal((await store.usageUnder(carol)).workloads, 2);
      assert.equal((await store.usageUnder(dan)).workloads, 1);

      assert.equal(await store.releaseUsage(carol, 'c1'), true);
      assert.equal(
        (await store.reserveUsage(sampleReservation(dan, 'd2'), ceilingsOf(dan))).outcome,
        'reserved',
        "Carol's release made room for Dan",
      );
      assert.deepEqual(await store.reserveUsage(sampleReservation(dan, 'd3'), ceilingsOf(dan)), {
        outcome: 'exceeded',
        subtree: alice,
        resource: 'workloads',
        used: 3,
        limit: 3,
      });
    });

    test('releaseUsage: true once, then false; the capacity is free again', async () => {
      const { store } = await fresh();
      const alice = '/alice';
      const ceilings = [ceiling(alice, 1)];
      await store.reserveUsage(sampleReservation(alice, 'web'), ceilings);
      assert.equal((await store.reserveUsage(sampleReservation(alice, 'db'), ceilings)).outcome, 'exceeded');
      assert.equal(await store.releaseUsage('/alicia', 'web'), false, 'held under another subtree');
      await rejectsWith(
        store.releaseUsage(delegatedSpiffeId('/alice'), 'web'),
        'invalid_argument',
        /subtree/,
      );
      await rejectsWith(store.releaseUsage('', 'web'), 'invalid_argument', /subtree/);
      assert.equal(await store.releaseUsage(alice, 'nothing'), false);
      assert.equal(await store.releaseUsage(alice, 'web'), true);
      assert.equal(await store.releaseUsage(alice, 'web'), false);
      assert.deepEqual(await store.listReservations(alice), []);
      assert.deepEqual(await store.usageUnder(alice), {
        workloads: 0,
        cpus: [],
        memoryMiB: 0,
        blockMiB: 0,
        reservations: 0,
      });
      const db = sampleReservation(alice, 'db');
      assert.deepEqual(await store.reserveUsage(db, ceilings), { outcome: 'reserved', reservation: db });
      // The released holder name can be reserved again, afresh.
      const web = sampleReservation(alice, 'web', { workloads: 0, createdAt: at(900) });
      assert.deepEqual(await store.reserveUsage(web, ceilings), { outcome: 'reserved', reservation: web });
    });

    test('usageUnder sums the reservations at or under a subtree key, with its distinct CPU ids ascending', async () => {
      const { store } = await fresh();
      const reservations = [
        sampleReservation('/alice/carol', 'h1', { cpus: [3, 10, 1], memoryMiB: 100, blockMiB: 1000 }),
        sampleReservation('/alice/carol/dave', 'h2', {
          workloads: 2,
          cpus: [1, 2],
          memoryMiB: 200,
          blockMiB: 2000,
        }),
        sampleReservation('/alice', 'h3', { cpus: [], memoryMiB: 50, blockMiB: 0 }),
        sampleReservation('/alicia', 'h4', { workloads: 5, cpus: [9] }),
        sampleReservation('/alice_x', 'h5', { workloads: 7, cpus: [8] }),
      ];
      for (const reservation of reservations) await store.reserveUsage(reservation, []);
      assert.deepEqual(await store.usageUnder('/alice'), {
        workloads: 4,
        cpus: [1, 2, 3, 10],
        memoryMiB: 350,
        blockMiB: 3000,
        reservations: 3,
      });
      assert.deepEqual(await store.usageUnder('/alice/carol'), {
        workloads: 3,
        cpus: [1, 2, 3, 10],
        memoryMiB: 300,
        blockMiB: 3000,
        reservations: 2,
      });
      assert.deepEqual(await store.usageUnder('/alicia'), {
        workloads: 5,
        cpus: [9],
        memoryMiB: 512,
        blockMiB: 1024,
        reservations: 1,
      });
      const none = { workloads: 0, cpus: [], memoryMiB: 0, blockMiB: 0, reservations: 0 };
      assert.deepEqual(await store.usageUnder('/al_ce'), none);
      assert.deepEqual(await store.usageUnder('/nobody'), none);
      // The top-level subtrees are disjoint and together hold every reservation, each once.
      const tops = await Promise.all(
        ['/alice', '/alicia', '/alice_x'].map((under) => store.usageUnder(under)),
      );
      assert.deepEqual(
        tops.reduce((sum, top) => ({
          workloads: sum.workloads + top.workloads,
          cpus: [...new Set([...sum.cpus, ...top.cpus])].sort((a, b) => a - b),
          memoryMiB: sum.memoryMiB + top.memoryMiB,
          blockMiB: sum.blockMiB + top.blockMiB,
          reservations: sum.reservations + top.reservations,
        })),
        {
          workloads: 16,
          cpus: [1, 2, 3, 8, 9, 10],
          memoryMiB: 350 + 512 * 2,
          blockMiB: 3000 + 1024 * 2,
          reservations: 5,
        },
      );
      await rejectsWith(store.usageUnder(''), 'invalid_argument', /under/);
      await rejectsWith(store.usageUnder(delegatedSpiffeId('/alice')), 'invalid_argument', /under/);
    });

    test('listReservations returns those at or under a subtree key, ordered by subtree, then holder', async () => {
      const { store } = await fresh();
      const r = {
        aliceLower: sampleReservation('/alice', 'web'),
        aliceUpper: sampleReservation('/alice', 'Web'),
        carol: sampleReservation('/alice/carol', 'a'),
        zed: sampleReservation('/alice/Zed', 'z'),
        alicia: sampleReservation('/alicia', 'a'),
        underscore: sampleReservation('/alice_x', 'a'),
      };
      for (const reservation of Object.values(r)) await store.reserveUsage(reservation, []);
      // Byte order: "Web" before "web", "Zed" before "carol".
      assert.deepEqual(await store.listReservations('/alice'), [r.aliceUpper, r.aliceLower, r.zed, r.carol]);
      assert.deepEqual(await store.listReservations('/alice/carol'), [r.carol]);
      assert.deepEqual(await store.listReservations('/al_ce'), []);
      assert.deepEqual(await store.listReservations('/alice_x'), [r.underscore]);
      await rejectsWith(store.listReservations(delegatedSpiffeId('/alice')), 'invalid_argument', /under/);
    });

    test('reserveUsage refuses malformed reservations and ceilings (invalid_argument) and stores nothing', async () => {
      const { store } = await fresh();
      const carol = '/alice/carol';
      const good = sampleReservation(carol, 'web');
      const badReservations: Partial<UsageReservation>[] = [
        { workloads: -1 },
        { workloads: 1.5 },
        { memoryMiB: Number.NaN },
        { blockMiB: -5 },
        { cpus: [-1] },
        { cpus: [0.5] },
        { cpus: ['1' as unknown as number] },
        { holder: '' },
        { subtree: '' },
        { subtree: 'alice/carol' },
        // A SPIFFE ID is not a subtree key.
        { subtree: delegatedSpiffeId(carol) },
        { createdAt: new Date(Number.NaN) },
      ];
      for (const overrides of badReservations)
        await rejectsWith(
          store.reserveUsage({ ...good, ...overrides }, [ceiling('/alice', 10)]),
          'invalid_argument',
        );
      // A ceiling must be at or above the reservation's subtree key, by whole segments.
      for (const elsewhere of ['/alicia', '/ali', `${carol}/dave`, '/al_ce', `${carol}//web`])
        await rejectsWith(store.reserveUsage(good, [ceiling(elsewhere, 10)]), 'invalid_argument', /ceiling/);
      await rejectsWith(store.reserveUsage(good, [ceiling('/alice', -1)]), 'invalid_argument', /ceiling/);
      for (const malformed of ['', delegatedSpiffeId('/alice')])
        await rejectsWith(store.reserveUsage(good, [ceiling(malformed, 10)]), 'invalid_argument', /ceiling/);
      assert.deepEqual(await store.listReservations('/alice'), []);
    });

    test('reserveUsage under concurrency: of 10 racing reservations under a 3-workload ceiling exactly 3 are reserved', async () => {
      const { store, another } = await fresh();
      const stores = [store, await another(), await another()];
      const alice = '/alice';
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          stores[i % stores.length].reserveUsage(sampleReservation(alice, `web-${i}`), [ceiling(alice, 3)]),
        ),
      );
      assert.equal(
        results.filter((r) => r.outcome === 'reserved').length,
        3,
        `outcomes: ${results.map((r) => r.outcome)}`,
      );
      assert.equal(results.filter((r) => r.outcome === 'exceeded').length, 7);
      assert.equal((await store.listReservations(alice)).length, 3);
      assert.equal((await store.usageUnder(alice)).workloads, 3);
    });

    test('reserveUsage under concurrency: siblings racing under a shared parent ceiling never overfill it', async () => {
      const { store, another } = await fresh();
      const stores = [store, await another(), await another()];
      const alice = '/alice';
      const dan = `${alice}/dan`;
      // 12 principals, each reserving once: 6 children of Alice and 6 grandchildren under Dan.
      const results = await Promise.all(
        Array.from({ length: 12 }, (_, i) => {
          const principal = i % 2 === 0 ? `${alice}/c${i}` : `${dan}/e${i}`;
          const ceilings = [
            ceiling(alice, 3),
            ...(i % 2 === 0 ? [] : [ceiling(dan, 10)]),
            ceiling(principal, 10),
          ];
          return stores[i % stores.length].reserveUsage(sampleReservation(principal, 'w'), ceilings);
        }),
      );
      assert.equal(
        results.filter((r) => r.outcome === 'reserved').length,
        3,
        `outcomes: ${results.map((r) => r.outcome)}`,
      );
      assert.equal((await store.usageUnder(alice)).workloads, 3);
    });

    test('reserveUsage under concurrency: the same holder reserved 10 times at once is reserved once, existing 9 times', async () => {
      const { store, another } = await fresh();
      const stores = [store, await another()];
      const carol = '/alice/carol';
      const web = sampleReservation(carol, 'web');
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          stores[i % stores.length].reserveUsage(web, [ceiling('/alice', 5), ceiling(carol, 5)]),
        ),
      );
      assert.deepEqual(results.map((r) => r.outcome).sort(), [...Array(9).fill('existing'), 'reserved']);
      for (const result of results)
        assert.ok(result.outcome !== 'exceeded' && result.reservation.holder === 'web');
      assert.equal((await store.usageUnder(carol)).workloads, 1);
    });

    test('releaseUsageUnder deletes every reservation at or under a subtree key in one go, and nothing beside it', async () => {
      const { store } = await fresh();
      const alice = '/alice';
      const held = [
        sampleReservation(alice, 'own'),
        sampleReservation('/alice/carol', 'web'),
        sampleReservation('/alice/carol', 'db'),
        sampleReservation('/alice/carol//job', 'tmp'),
        sampleReservation('/alice/carol/dave', 'cache'),
        sampleReservation('/alice/carolyn', 'other'),
        sampleReservation('/bob', 'bob'),
      ];
      for (const reservation of held) await store.reserveUsage(reservation, []);
      assert.equal((await store.usageUnder(alice)).workloads, 6);
      assert.equal(await store.releaseUsageUnder('/alice/carol'), 4);
      assert.deepEqual(
        (await store.listReservations(alice)).map((r) => `${r.subtree} ${r.holder}`),
        ['/alice own', '/alice/carolyn other'],
      );
      assert.equal((await store.usageUnder(alice)).workloads, 2);
      assert.equal(await store.releaseUsageUnder('/alice/carol'), 0, 'nothing left to release');
      assert.equal((await store.usageUnder('/bob')).workloads, 1);
      await rejectsWith(store.releaseUsageUnder(delegatedSpiffeId('/alice')), 'invalid_argument', /subtree/);
    });

    // --- revoked keys and lineage ---------------------------------------------------

    test('revokeKey inserts once (the first record is kept) and getRevokedKey returns it field for field', async () => {
      const { store, another } = await fresh();
      const keyHash = 'ab'.repeat(32);
      const first = {
        keyHash,
        reason: 'keyCompromise',
        serial: '1a2b',
        nodeId: 'n123',
        revokedAt: at(10),
        revokedBy: ADMIN,
      };
      assert.equal(await store.getRevokedKey(keyHash), null);
      assert.equal(await store.revokeKey(first), true);
      const other = await another();
      assert.equal(
        await other.revokeKey({ ...first, reason: 'nodeRevoked', serial: null, revokedAt: at(20) }),
        false,
      );
      assert.deepEqual(await other.getRevokedKey(keyHash), first);
      const bare = { ...first, keyHash: 'cd'.repeat(32), serial: null, nodeId: null };
      assert.equal(await store.revokeKey(bare), true);
      assert.deepEqual(await store.getRevokedKey(bare.keyHash), bare);
      await rejectsWith(store.revokeKey({ ...first, keyHash: 'not a hash' }), 'invalid_argument', /hash/);
      await rejectsWith(
        store.revokeKey({ ...first, keyHash: 'ef'.repeat(32), reason: '' }),
        'invalid_argument',
      );
      assert.equal(await store.getRevokedKey('ef'.repeat(32)), null, 'a refused record stores nothing');
    });

    test('recordLineage files a serial under its first lineage; listLineage lists a lineage from an instant on, oldest first', async () => {
      const { store } = await fresh();
      const line = 'certificate:1000';
      await store.recordLineage({ serial: '1003', lineage: line, issuedAt: at(30) });
      await store.recordLineage({ serial: '1000', lineage: line, issuedAt: at(0) });
      await store.recordLineage({ serial: '1002', lineage: line, issuedAt: at(20) });
      await store.recordLineage({ serial: '1001', lineage: line, issuedAt: at(20) });
      await store.recordLineage({ serial: '2000', lineage: 'certificate:2000', issuedAt: at(25) });
      // A serial belongs to the lineage it was first filed under.
      await store.recordLineage({ serial: '1002', lineage: 'certificate:2000', issuedAt: at(99) });
      assert.deepEqual(await store.getLineage('1002'), { serial: '1002', lineage: line, issuedAt: at(20) });
      assert.equal(await store.getLineage('ffff'), null);
      assert.deepEqual(
        (await store.listLineage(line, at(0))).map((entry) => entry.serial),
        ['1000', '1001', '1002', '1003'],
      );
      assert.deepEqual(
        (await store.listLineage(line, at(20))).map((entry) => entry.serial),
        ['1001', '1002', '1003'],
      );
      assert.deepEqual(await store.listLineage(line, at(31)), []);
      assert.deepEqual(await store.listLineage('certificate:9999', at(0)), []);
      await rejectsWith(
        store.recordLineage({ serial: '00AB', lineage: line, issuedAt: at(1) }),
        'invalid_argument',
        /serial/,
      );
    });

    // --- events -------------------------------------------------------------------

    test('unsubscribe stops delivery; a listener that throws neither fails the write nor starves others', async () => {
      const errors: Error[] = [];
      const { store } = await fresh({ onError: (error) => errors.push(error) });
      const thrower = store.subscribe(() => {
        throw new Error('listener bug');
      });
      const events = recordEvents(store);
      const gone = recordEvents(store);
      gone.unsubscribe();
      await store.insertCertificate(sampleCertificate(1));
      assert.equal(await store.revokeCertificate(sampleCertificate(1).serial, 'superseded', at(10)), true);
      await events.waitFor((e) => e.kind === 'revocation', 'revocation');
      assert.deepEqual(gone.events, []);
      assert.ok(errors.some((e) => /listener bug/.test(e.message)));
      thrower();
    });

    // --- migrations and lifecycle -------------------------------------------------

    test('migrate again is a no-op that keeps every record', async () => {
      const { store } = await fresh();
      await store.insertToken(sampleToken('tok'));
      await store.initSetting('k', 'v');
      await store.migrate();
      await store.migrate();
      assert.equal((await store.getToken('tok'))?.id, 'tok');
      assert.equal(await store.getSetting('k'), 'v');
    });

    test('two store objects migrating the same empty database at once both succeed', async () => {
      const { store, another } = await fresh({ migrate: false });
      const others = [await another(), await another()];
      await Promise.all([store.migrate(), ...others.map((s) => s.migrate())]);
      await store.insertToken(sampleToken('tok'));
      assert.equal((await others[1].getToken('tok'))?.id, 'tok');
    });

    test('durability: after close, a new store object on the same database sees every acknowledged write', async () => {
      const { store, another } = await fresh();
      await store.initSetting('trust-domain', 'example.test');
      await store.putCa(sampleCa('root'));
      const certificate = sampleCertificate(3);
      await store.insertCertificate(certificate);
      await store.revokeCertificate(certificate.serial, 'superseded', at(9));
      await store.insertToken(sampleToken('tok'));
      const node = await store.registerNode('tok', sampleNode('node-1', 'tok'), at(60));
      assert.equal(node.outcome, 'created');
      await store.transitionNode('node-1', ['NEW'], 'UP', {
        certificateSerial: certificate.serial,
        at: at(70),
      });
      const delegation = sampleDelegation('/alice', 1);
      await store.recordDelegation(delegation);
      await store.recordDelegation(sampleDelegation('/alice/carol', 2));
      await store.recordDelegation(sampleDelegation('/alice/carol//web', 3, { isCa: false, policy: null }));
      await store.revokeDelegation(delegation.fingerprint, 'superseded', at(80), ADMIN);
      await store.reserveUsage(sampleReservation('/alice/carol', 'web', { cpus: [2] }), [
        ceiling('/alice', 3),
      ]);
      await store.reserveUsage(sampleReservation('/alice', 'db'), []);
      await store.releaseUsage('/alice', 'db');
      const snapshot = async (s: Store) => ({
        setting: await s.getSetting('trust-domain'),
        cas: await s.listCas(),
        certificate: await s.getCertificate(certificate.serial),
        token: await s.getToken('tok'),
        nodes: await s.listNodes(),
        delegations: await s.listDelegations(),
        revokedDelegations: await s.listRevokedDelegations(at(90)),
        reservations: await s.listReservations('/alice'),
        usage: await s.usageUnder('/alice'),
      });
      const expected = await snapshot(store);
      assert.equal(expected.delegations.length, 3);
      assert.equal(expected.revokedDelegations.length, 1);
      assert.equal(expected.reservations.length, 1);
      await store.close();
      const reopened = await another();
      assert.deepEqual(await snapshot(reopened), expected);
    });

    // --- workload placement -----------------------------------------------

    test('a node workload address: set, read, withdrawn; another store object sees it; the node record is left alone', async () => {
      const { store, another } = await fresh();
      await store.insertToken(sampleToken('tok', { usesTotal: 2, usesLeft: 2 }));
      await store.registerNode('tok', sampleNode('node-1', 'tok', { name: 'web-1' }), at(120));
      const before = await store.getNode('node-1');
      assert.equal(await store.getNodeWorkloadAddress('node-1'), null, 'none registered yet');
      assert.equal(await store.setNodeWorkloadAddress('node-1', '10.0.0.5:7543'), true);
      assert.equal(await store.getNodeWorkloadAddress('node-1'), '10.0.0.5:7543');
      assert.equal(await (await another()).getNodeWorkloadAddress('node-1'), '10.0.0.5:7543');
      assert.deepEqual(await store.getNode('node-1'), before, 'state and updatedAt unchanged');
      assert.equal(await store.setNodeWorkloadAddress('node-1', null), true);
      assert.equal(await store.getNodeWorkloadAddress('node-1'), null);
      // An unknown node: false, and nothing is created.
      assert.equal(await store.setNodeWorkloadAddress('node-2', '10.0.0.6:7543'), false);
      assert.equal(await store.getNodeWorkloadAddress('node-2'), null);
      assert.equal(await store.getNode('node-2'), null);
      await rejectsWith(store.setNodeWorkloadAddress('node-1', ''), 'invalid_argument', /workload address/);
    });

    test('listNodesNamed: every node of that name (names are not unique), oldest first; nothing else', async () => {
      const { store } = await fresh();
      await store.insertToken(sampleToken('tok', { usesTotal: 3, usesLeft: 3 }));
      const second = sampleNode('node-b', 'tok', { name: 'web-1', createdAt: at(70), updatedAt: at(70) });
      const first = sampleNode('node-a', 'tok', { name: 'web-1', createdAt: at(65), updatedAt: at(65) });
      await store.registerNode('tok', second, at(120));
      await store.registerNode('tok', first, at(120));
      await store.registerNode('tok', sampleNode('node-c', 'tok', { name: 'Web-1' }), at(120));
      assert.deepEqual(
        (await store.listNodesNamed('web-1')).map((node) => node.id),
        ['node-a', 'node-b'],
      );
      assert.deepEqual(await store.listNodesNamed('web'), []);
      await rejectsWith(store.listNodesNamed(''), 'invalid_argument', /node name/);
    });

    test('listReservationsHeldBy: holders starting with the prefix, in every subtree, nothing of another node', async () => {
      const { store } = await fresh();
      const mine = [
        sampleReservation('/alice/carol', 'node/n1/web'),
        sampleReservation('/bob', 'node/n1/db', { cpus: [3], memoryMiB: 64 }),
      ];
      for (const reservation of [
        ...mine,
        sampleReservation('/alice/carol', 'node/n10/web'),
        sampleReservation('/alice/carol', 'node/n1'),
        sampleReservation('/alice/carol', 'node/n0/web'),
        sampleReservation('/alice/carol', 'pod-1'),
      ])
        assert.equal((await store.reserveUsage(reservation, [])).outcome, 'reserved');
      assert.deepEqual(await store.listReservationsHeldBy('node/n1/'), [mine[0], mine[1]]);
      assert.deepEqual(await store.listReservationsHeldBy('node/n2/'), []);
      // Releasing one (subtree, holder) leaves the node's others.
      assert.equal(await store.releaseUsage('/bob', 'node/n1/db'), true);
      assert.equal(await store.releaseUsage('/bob', 'node/n1/db'), false);
      assert.deepEqual(await store.listReservationsHeldBy('node/n1/'), [mine[0]]);
      await rejectsWith(store.listReservationsHeldBy(''), 'invalid_argument', /holder prefix/);
      await rejectsWith(store.listReservationsHeldBy('node/ n1/'), 'invalid_argument', /holder prefix/);
    });

    test('a closed store refuses further calls (failed_precondition), and closing twice is fine', async () => {
      const { store } = await fresh();
      await store.close();
      await store.close();
      await rejectsWith(store.getSetting('k'), 'failed_precondition', /closed/);
      await rejectsWith(store.insertToken(sampleToken('tok')), 'failed_precondition', /closed/);
    });
  });
}
