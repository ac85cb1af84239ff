// The Store contract, as one suite every implementation must pass (SPIRE's
// datastore approach): sqlite.test.ts and postgres.test.ts each call
// storeContract() with a harness that opens a store on a fresh database.
// Nothing here knows which backend it is testing.
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { SigilError } from '../../src/errors.ts';
import type {
  CaRecord,
  CertificateFilter,
  CertificateRecord,
  NodeRecord,
  Store,
  StoreEvent,
  TokenRecord,
} from '../../src/store/store.ts';

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

export interface StoreHarness {
  readonly name: string;
  /** Set when the backend cannot run here: every test skips, printing this reason. */
  readonly skip?: string;
  fresh(options?: FreshOptions): Promise<StoreFixture>;
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

async function rejectsWith(promise: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof SigilError, `expected a SigilError, got ${String(error)}`);
    assert.equal(error.code, code);
    if (message) assert.match(error.message, message);
    return true;
  });
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
      const expected = {
        setting: await store.getSetting('trust-domain'),
        cas: await store.listCas(),
        certificate: await store.getCertificate(certificate.serial),
        token: await store.getToken('tok'),
        nodes: await store.listNodes(),
      };
      await store.close();
      const reopened = await another();
      assert.deepEqual(
        {
          setting: await reopened.getSetting('trust-domain'),
          cas: await reopened.listCas(),
          certificate: await reopened.getCertificate(certificate.serial),
          token: await reopened.getToken('tok'),
          nodes: await reopened.listNodes(),
        },
        expected,
      );
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
