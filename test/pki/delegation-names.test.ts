import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  checkDelegationName,
  DELEGATION_LABEL,
  delegatedId,
  delegationHost,
  isWithinSubtree,
  parseDelegatedId,
  permittedUriHosts,
  subtreeKey,
  subtreeOfHost,
  subtreeOfKey,
} from '../../src/pki/delegation-names.ts';
import { invalid, refusal } from '../support/refusals.ts';

const TD = 'example.test';

describe('checkDelegationName', () => {
  it('accepts DNS labels: lower-case letters, digits, inner hyphens, 1 to 63 characters', () => {
    for (const good of [
      'a',
      '0',
      'alice',
      'ci-2',
      'a-b-c',
      '9lives',
      'x'.repeat(63),
      `a${'-'.repeat(61)}z`,
    ]) {
      assert.equal(checkDelegationName(good), good);
    }
  });

  it('refuses names that are not one DNS label, naming the rule', () => {
    const bad = [
      '',
      '.',
      'a.b', // a dot would make two labels: another subtree's host
      '_',
      'a_b',
      'Alice',
      'ALICE',
      'x'.repeat(64),
      '-a',
      'a-',
      '-',
      'a b',
      'a/b',
      '..',
      'é',
      'a\n',
    ];
    for (const name of bad) {
      assert.throws(
        () => checkDelegationName(name),
        invalid(/must be 1 to 63 lower-case letters, digits or inner hyphens \(it becomes a DNS label\)/),
        JSON.stringify(name),
      );
    }
  });

  it('shortens a very long refused name in its message', () => {
    assert.throws(
      () => checkDelegationName('x'.repeat(500)),
      refusal(null, /…/, (error) => assert.ok(error.message.length < 300, 'the name is cut short')),
    );
  });
});

describe('delegationHost and delegatedId', () => {
  it('put the child label first, then "d", then the trust domain', () => {
    assert.equal(DELEGATION_LABEL, 'd');
    assert.equal(delegationHost(TD, ['alice']), 'alice.d.example.test');
    assert.equal(delegationHost(TD, ['alice', 'carol']), 'carol.alice.d.example.test');
    assert.equal(delegatedId(TD, ['alice']), 'spiffe://alice.d.example.test');
    assert.equal(delegatedId(TD, ['alice', 'carol']), 'spiffe://carol.alice.d.example.test');
    assert.equal(delegatedId(TD, ['alice', 'carol'], '/web'), 'spiffe://carol.alice.d.example.test/web');
    assert.equal(delegatedId(TD, ['alice', 'carol', 'ci']), 'spiffe://ci.carol.alice.d.example.test');
  });

  it('refuses an empty subtree, bad names anywhere in it, and a bad trust domain', () => {
    assert.throws(() => delegationHost(TD, []), invalid(/needs at least one name/));
    for (const subtree of [['Alice'], ['alice', 'a.b'], ['alice', '_'], ['alice', 'x'.repeat(64)], ['.']]) {
      assert.throws(() => delegationHost(TD, subtree), invalid(/DNS label/), subtree.join('/'));
      assert.throws(() => delegatedId(TD, subtree), invalid(/DNS label/), subtree.join('/'));
    }
    assert.throws(() => delegationHost('spiffe://example.test', ['alice']), invalid(/trust domain/));
    assert.throws(() => delegationHost('Example.Test', ['alice']), invalid(/trust domain/));
  });

  it('refuses a workload path that is not a valid SPIFFE path', () => {
    assert.throws(() => delegatedId(TD, ['alice'], '/web/'), invalid(/SPIFFE ID/));
    assert.throws(() => delegatedId(TD, ['alice'], '//web'), invalid(/SPIFFE ID/));
  });

  it('a host of exactly 253 characters is accepted; 254 is refused, naming the length', () => {
    // host = names joined by "." + ".d." + "example.test": 15 characters besides the names.
    const at253 = ['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63), 'e'.repeat(46)];
    assert.equal(delegationHost(TD, at253).length, 253);
    assert.match(delegatedId(TD, at253), /^spiffe:\/\/e{46}\.c{63}\.b{63}\.a{63}\.d\.example\.test$/);
    const at254 = ['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63), 'e'.repeat(47)];
    assert.throws(
      () => delegationHost(TD, at254),
      invalid(/would have a host of 254 characters; at most 253 fit/),
    );
    assert.throws(() => delegatedId(TD, at254), invalid(/254 characters/));
    // Many short names overflow too.
    const deep = Array.from({ length: 120 }, (_, i) => `n${i % 10}`);
    assert.throws(() => delegationHost(TD, deep), invalid(/at most 253 fit/));
  });

  it('permittedUriHosts is the host and every host beneath it', () => {
    assert.deepEqual(permittedUriHosts(TD, ['alice', 'carol']), [
      'carol.alice.d.example.test',
      '.carol.alice.d.example.test',
    ]);
  });
});

describe('subtree keys', () => {
  it('subtreeKey and subtreeOfKey are inverses', () => {
    assert.equal(subtreeKey(['alice']), '/alice');
    assert.equal(subtreeKey(['alice', 'carol']), '/alice/carol');
    assert.equal(subtreeKey([]), '');
    assert.deepEqual(subtreeOfKey('/alice/carol'), ['alice', 'carol']);
    assert.deepEqual(subtreeOfKey('/alice'), ['alice']);
    assert.deepEqual(subtreeOfKey(''), []);
    for (const subtree of [['a'], ['alice', 'carol', 'dan'], ['x'.repeat(63), '0']]) {
      assert.deepEqual(subtreeOfKey(subtreeKey(subtree)), subtree);
    }
  });

  it('isWithinSubtree: at or beneath, by whole names', () => {
    assert.ok(isWithinSubtree(['alice'], ['alice']));
    assert.ok(isWithinSubtree(['alice', 'carol'], ['alice']));
    assert.ok(isWithinSubtree(['alice', 'carol', 'dan'], ['alice', 'carol']));
    assert.ok(!isWithinSubtree(['alice'], ['alice', 'carol']), 'a parent is not within its child');
    assert.ok(!isWithinSubtree(['alice', 'carolyn'], ['alice', 'carol']), 'a shared prefix is not a parent');
    assert.ok(!isWithinSubtree(['bob', 'carol'], ['alice', 'carol']), 'siblings are apart');
    assert.ok(!isWithinSubtree(['alicex'], ['alice']));
  });
});

describe('subtreeOfHost and parseDelegatedId', () => {
  it('read the subtree back from a host, parent first', () => {
    assert.deepEqual(subtreeOfHost('alice.d.example.test', TD), ['alice']);
    assert.deepEqual(subtreeOfHost('ci.carol.alice.d.example.test', TD), ['alice', 'carol', 'ci']);
  });

  it('a host not beneath .d.<td> is not delegated', () => {
    for (const host of [
      'example.test', // the trust domain itself: deployment identities
      'd.example.test',
      'alice.example.test',
      'alice.d.other.test',
      'alice.d.example.test.evil', // the suffix must end the host
      'alice.dd.example.test',
      'alice.xd.example.test',
      'Alice.d.example.test',
      'a_b.d.example.test',
      'a..d.example.test',
      '.d.example.test',
      `${'x'.repeat(64)}.d.example.test`,
    ]) {
      assert.equal(subtreeOfHost(host, TD), null, host);
    }
  });

  it('parseDelegatedId gives the subtree and path of a delegated ID, null for anything else', () => {
    assert.deepEqual(parseDelegatedId('spiffe://alice.d.example.test', TD), { subtree: ['alice'], path: '' });
    assert.deepEqual(parseDelegatedId('spiffe://carol.alice.d.example.test/web', TD), {
      subtree: ['alice', 'carol'],
      path: '/web',
    });
    assert.deepEqual(parseDelegatedId('spiffe://carol.alice.d.example.test/a/b', TD), {
      subtree: ['alice', 'carol'],
      path: '/a/b',
    });
    for (const id of [
      'spiffe://example.test/admin/x', // the trust domain itself
      'spiffe://example.test/d/alice', // the old path form
      'spiffe://example.test/d/alice/carol',
      'spiffe://alice.d.other.test',
      'spiffe://alice.example.test',
      'SPIFFE://alice.d.example.test',
      'https://alice.d.example.test',
      'spiffe://alice.d.example.test/',
      'spiffe://alice.d.example.test/web?x',
      'garbage',
      '',
    ]) {
      assert.equal(parseDelegatedId(id, TD), null, id);
    }
  });

  it('round trip: delegatedId then parseDelegatedId', () => {
    for (const [subtree, path] of [
      [['alice'], ''],
      [['alice', 'carol'], '/web'],
      [['a', 'b', 'c', 'd'], '/x/y'],
    ] as const) {
      assert.deepEqual(parseDelegatedId(delegatedId(TD, subtree, path), TD), { subtree, path });
    }
  });
});
