import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  classifyAddress,
  dnsName,
  emailName,
  ipAddress,
  ipRange,
  parseSpiffeId,
  parseTrustDomain,
  spiffeId,
  uriName,
} from '../../src/pki/names.ts';
import { assertThrowsRefusal } from '../support/refusals.ts';

const refused = (fn: () => unknown, pattern: RegExp) => assertThrowsRefusal(fn, 'invalid_argument', pattern);

describe('dnsName', () => {
  test('accepts and lowercases ordinary names', () => {
    assert.deepEqual(dnsName('API.Example.COM'), { type: 'dns', value: 'api.example.com' });
    assert.equal(dnsName('localhost').value, 'localhost');
    assert.equal(dnsName('a-b.c0.example').value, 'a-b.c0.example');
    assert.equal(dnsName('xn--bcher-kva.example').value, 'xn--bcher-kva.example');
    assert.equal(dnsName('1.2.3.example').value, '1.2.3.example');
  });

  test('accepts a wildcard as the whole leftmost label', () => {
    assert.equal(dnsName('*.Example.com').value, '*.example.com');
  });

  test('accepts 63-character labels and 253-character names', () => {
    const label = 'a'.repeat(63);
    assert.equal(dnsName(`${label}.com`).value, `${label}.com`);
    const long = `${'a'.repeat(61)}.${'b'.repeat(61)}.${'c'.repeat(61)}.${'d'.repeat(61)}.e`;
    assert.equal(long.length, 249);
    assert.equal(dnsName(`aaa.${long}`).value.length, 253);
    refused(() => dnsName(`aaaa.${long}`), /longer than 253/);
  });

  test('refuses an IPv4 or IPv6 literal with a hint', () => {
    refused(() => dnsName('127.0.0.1'), /^"127\.0\.0\.1" is an IP address, not a DNS name \(use --ip\)$/);
    refused(() => dnsName('::1'), /"::1" is an IP address/);
  });

  test('refuses a partial wildcard', () => {
    refused(() => dnsName('f*.example.com'), /wildcard may only be the whole leftmost label/);
  });

  test('refuses a wildcard that is not leftmost', () => {
    refused(() => dnsName('api.*.example.com'), /wildcard may only be the whole leftmost label/);
  });

  test('refuses a bare wildcard', () => {
    refused(() => dnsName('*'), /wildcard needs a domain after it/);
  });

  test('refuses an empty name', () => {
    refused(() => dnsName(''), /invalid DNS name "": it is empty/);
  });

  test('refuses a trailing dot', () => {
    refused(() => dnsName('example.com.'), /may not end with "\."/);
  });

  test('refuses empty labels', () => {
    refused(() => dnsName('a..b'), /empty label/);
    refused(() => dnsName('.example.com'), /empty label/);
  });

  test('refuses a label over 63 characters', () => {
    refused(() => dnsName(`${'a'.repeat(64)}.com`), /longer than 63 characters/);
  });

  test('refuses a name over 253 characters', () => {
    refused(() => dnsName(`${'abcdefghi.'.repeat(25)}abcd`), /longer than 253 characters/);
  });

  test('refuses underscores, spaces and other non-LDH characters', () => {
    refused(() => dnsName('_srv.example.com'), /label "_srv" may contain only letters, digits and "-"/);
    refused(() => dnsName('a b.com'), /may contain only letters, digits and "-"/);
    refused(() => dnsName('host:443'), /may contain only/);
  });

  test('refuses a leading or trailing hyphen in a label', () => {
    refused(() => dnsName('-a.example.com'), /label "-a" may not start or end with "-"/);
    refused(() => dnsName('a-.example.com'), /label "a-" may not start or end with "-"/);
  });

  test('refuses non-ASCII names, pointing to the xn-- form', () => {
    refused(() => dnsName('bücher.example'), /must be ASCII/);
  });

  test('refuses names whose last label is all digits (they read as IP addresses)', () => {
    refused(() => dnsName('1.2.3'), /last label may not be all digits/);
    refused(() => dnsName('01.2.3.4'), /last label may not be all digits/);
    refused(() => dnsName('example.123'), /last label may not be all digits/);
  });

  test('names the bad value on one line even when it contains a newline', () => {
    refused(() => dnsName('a\nb'), /invalid DNS name "a\\nb"/);
  });
});

describe('ipAddress', () => {
  test('IPv4: canonical text and 4 bytes', () => {
    assert.deepEqual(ipAddress('10.1.2.3'), {
      type: 'ip',
      value: '10.1.2.3',
      bytes: Buffer.from([10, 1, 2, 3]),
    });
    assert.deepEqual(ipAddress('0.0.0.0').bytes, Buffer.alloc(4));
    assert.deepEqual(ipAddress('255.255.255.255').bytes, Buffer.alloc(4, 0xff));
  });

  test('IPv6: RFC 5952 canonical text and 16 bytes', () => {
    const cases: [string, string][] = [
      ['::', '::'],
      ['::1', '::1'],
      ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
      ['2001:0db8:0000:0000:0001:0000:0000:0001', '2001:db8::1:0:0:1'],
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
      ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
      ['fe80::', 'fe80::'],
      ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
      ['::ffff:192.0.2.1', '::ffff:192.0.2.1'],
      ['::FFFF:c000:0201', '::ffff:192.0.2.1'],
      ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
    ];
    for (const [input, canonical] of cases) assert.equal(ipAddress(input).value, canonical, input);
    const v6 = ipAddress('2001:db8::1');
    assert.deepEqual(v6.bytes, Buffer.from('20010db8000000000000000000000001', 'hex'));
    const mapped = ipAddress('::ffff:1.2.3.4');
    assert.deepEqual(mapped.bytes, Buffer.from('00000000000000000000ffff01020304', 'hex'));
  });

  test('refuses IPv4 with leading zeros', () => {
    refused(() => ipAddress('01.2.3.4'), /invalid IP address "01\.2\.3\.4": leading zeros are ambiguous/);
    refused(() => ipAddress('10.0.0.010'), /leading zeros/);
  });

  test('refuses IPv6 zone ids', () => {
    refused(() => ipAddress('fe80::1%eth0'), /zone ids/);
  });

  test('refuses things that are not addresses', () => {
    refused(() => ipAddress('256.1.1.1'), /not an IPv4 or IPv6 address/);
    refused(() => ipAddress('1.2.3'), /not an IPv4 or IPv6 address/);
    refused(() => ipAddress('example.com'), /not an IPv4 or IPv6 address/);
    refused(() => ipAddress('1:2:3:4:5:6:7:8:9'), /not an IPv4 or IPv6 address/);
    refused(() => ipAddress('[::1]'), /not an IPv4 or IPv6 address/);
    refused(() => ipAddress(''), /not an IPv4 or IPv6 address/);
  });
});

describe('classifyAddress', () => {
  test('splits a mixed list into IP and DNS names', () => {
    assert.deepEqual(
      ['127.0.0.1', 'LocalHost', '::1', 'api.example.com'].map((a) => {
        const name = classifyAddress(a);
        return [name.type, name.value];
      }),
      [
        ['ip', '127.0.0.1'],
        ['dns', 'localhost'],
        ['ip', '::1'],
        ['dns', 'api.example.com'],
      ],
    );
  });

  test('refuses what is neither', () => {
    refused(() => classifyAddress('not a host'), /invalid DNS name/);
    refused(() => classifyAddress('fe80::1%eth0'), /zone ids/);
  });
});

describe('uriName', () => {
  test('accepts absolute URIs as given', () => {
    for (const uri of [
      'https://example.com/a?b=c#d',
      'urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6',
      'https://h/%41',
    ]) {
      assert.deepEqual(uriName(uri), { type: 'uri', value: uri });
    }
  });

  test('accepts a valid SPIFFE ID', () => {
    assert.equal(uriName('spiffe://example.org/ns/prod').value, 'spiffe://example.org/ns/prod');
  });

  test('refuses a spiffe URI that is not a valid SPIFFE ID, in any scheme case', () => {
    refused(() => uriName('spiffe://example.org/a/'), /invalid SPIFFE ID/);
    refused(() => uriName('SPIFFE://example.org/a'), /invalid SPIFFE ID .*lowercase/);
    refused(() => uriName('Spiffe:example.org'), /invalid SPIFFE ID/);
  });

  test('refuses a relative reference (no scheme)', () => {
    refused(() => uriName('/just/a/path'), /must be an absolute URI with a scheme/);
    refused(() => uriName('example.com'), /must be an absolute URI/);
  });

  test('refuses whitespace and control characters', () => {
    refused(() => uriName('https://example.com/a b'), /whitespace or control characters/);
    refused(() => uriName('https://example.com/\t'), /whitespace/);
  });

  test('refuses non-ASCII', () => {
    refused(() => uriName('https://example.com/ä'), /must be ASCII/);
  });

  test('refuses characters RFC 3986 does not allow', () => {
    refused(() => uriName('https://example.com/<x>'), /characters a URI may not/);
  });

  test('refuses a bad percent-escape', () => {
    refused(() => uriName('https://example.com/%zz'), /"%" must be followed by two hex digits/);
  });

  test('refuses an empty URI', () => {
    refused(() => uriName(''), /it is empty/);
  });

  test('refuses what URL parsing rejects', () => {
    refused(() => uriName('https://exa[mple.com'), /not a valid URI/);
  });
});

describe('emailName', () => {
  test('accepts local@domain, lowercasing the domain only', () => {
    assert.deepEqual(emailName('Ops.Team+ca@Example.COM'), {
      type: 'email',
      value: 'Ops.Team+ca@example.com',
    });
  });

  test('refuses a missing or repeated "@"', () => {
    refused(() => emailName('example.com'), /exactly one "@"/);
    refused(() => emailName('a@b@example.com'), /exactly one "@"/);
  });

  test('refuses an empty or malformed local part', () => {
    refused(() => emailName('@example.com'), /part before "@" is empty/);
    refused(() => emailName('a..b@example.com'), /part before "@" may contain only/);
    refused(() => emailName('.a@example.com'), /part before "@" may contain only/);
    refused(() => emailName('a b@example.com'), /part before "@" may contain only/);
    refused(() => emailName(`${'a'.repeat(65)}@example.com`), /longer than 64/);
  });

  test('refuses a wildcard domain', () => {
    refused(() => emailName('a@*.example.com'), /domain: a wildcard is not allowed here/);
  });

  test('refuses an invalid or IP domain', () => {
    refused(() => emailName('a@exa_mple.com'), /domain: label "exa_mple"/);
    refused(() => emailName('a@127.0.0.1'), /must be a DNS name, not an IP address/);
    refused(() => emailName('a@'), /domain: it is empty/);
  });
});

describe('parseSpiffeId', () => {
  test('parses an ID with and without a path', () => {
    assert.deepEqual(parseSpiffeId('spiffe://example.org'), {
      id: 'spiffe://example.org',
      trustDomain: 'example.org',
      path: '',
    });
    assert.deepEqual(parseSpiffeId('spiffe://example.org/ns/prod/sa/API_v2.1-x'), {
      id: 'spiffe://example.org/ns/prod/sa/API_v2.1-x',
      trustDomain: 'example.org',
      path: '/ns/prod/sa/API_v2.1-x',
    });
  });

  test('rule: scheme is exactly lowercase "spiffe://"', () => {
    assert.equal(parseSpiffeId('spiffe://td').trustDomain, 'td');
    refused(
      () => parseSpiffeId('SPIFFE://td/a'),
      /^invalid SPIFFE ID "SPIFFE:\/\/td\/a": the scheme must be lowercase "spiffe"$/,
    );
    refused(() => parseSpiffeId('https://td/a'), /must start with "spiffe:\/\/"/);
    refused(() => parseSpiffeId('spiffe:td/a'), /must start with "spiffe:\/\/"/);
    refused(() => parseSpiffeId(''), /it is empty/);
  });

  test('rule: trust domain is not empty', () => {
    assert.equal(parseSpiffeId('spiffe://a').trustDomain, 'a');
    refused(() => parseSpiffeId('spiffe://'), /trust domain is empty/);
    refused(() => parseSpiffeId('spiffe:///a'), /trust domain is empty/);
  });

  test('rule: trust domain has only lowercase letters, digits, ".", "-" and "_"', () => {
    assert.equal(parseSpiffeId('spiffe://my-td_1.example.org').trustDomain, 'my-td_1.example.org');
    refused(
      () => parseSpiffeId('spiffe://Ex.com/a'),
      /^invalid SPIFFE ID "spiffe:\/\/Ex\.com\/a": trust domain may contain only lowercase letters, digits, "\.", "-" and "_"$/,
    );
    refused(() => parseSpiffeId('spiffe://ex!.com'), /trust domain may contain only/);
  });

  test('rule: trust domain has no port', () => {
    refused(() => parseSpiffeId('spiffe://example.org:8443/a'), /trust domain may not contain a port/);
  });

  test('rule: trust domain has no userinfo', () => {
    refused(() => parseSpiffeId('spiffe://user@example.org/a'), /trust domain may not contain userinfo/);
  });

  test('rule: trust domain is at most 255 bytes', () => {
    assert.equal(parseSpiffeId(`spiffe://${'a'.repeat(255)}`).trustDomain.length, 255);
    refused(() => parseSpiffeId(`spiffe://${'a'.repeat(256)}`), /trust domain is longer than 255 bytes/);
  });

  test('rule: path segments have only letters, digits, ".", "-" and "_"', () => {
    assert.equal(parseSpiffeId('spiffe://td/Aa.0_-').path, '/Aa.0_-');
    refused(
      () => parseSpiffeId('spiffe://td/a b'),
      /path segments may contain only letters, digits, "\.", "-" and "_"/,
    );
    refused(() => parseSpiffeId('spiffe://td/a:b'), /path segments may contain only/);
    refused(() => parseSpiffeId('spiffe://td/caf\u00e9'), /path segments may contain only/);
  });

  test('rule: no empty path segments', () => {
    assert.equal(parseSpiffeId('spiffe://td/a/b').path, '/a/b');
    refused(() => parseSpiffeId('spiffe://td//a'), /may not contain empty segments/);
    refused(() => parseSpiffeId('spiffe://td/a//b'), /may not contain empty segments/);
  });

  test('rule: no trailing "/"', () => {
    refused(() => parseSpiffeId('spiffe://td/'), /the path may not end with "\/"/);
    refused(() => parseSpiffeId('spiffe://td/a/'), /the path may not end with "\/"/);
  });

  test('rule: no "." or ".." segments', () => {
    assert.equal(parseSpiffeId('spiffe://td/.a/..b/a.').path, '/.a/..b/a.');
    refused(() => parseSpiffeId('spiffe://td/a/./b'), /path segments may not be "\." or "\.\."/);
    refused(() => parseSpiffeId('spiffe://td/a/..'), /path segments may not be "\." or "\.\."/);
  });

  test('rule: no query', () => {
    refused(() => parseSpiffeId('spiffe://td/a?x=1'), /a query \("\?"\) is not allowed/);
    refused(() => parseSpiffeId('spiffe://td?x'), /a query/);
  });

  test('rule: no fragment', () => {
    refused(() => parseSpiffeId('spiffe://td/a#b'), /a fragment \("#"\) is not allowed/);
  });

  test('rule: no percent-encoding', () => {
    refused(() => parseSpiffeId('spiffe://td/a%20b'), /percent-encoding/);
  });

  test('rule: at most 2048 bytes', () => {
    const prefix = 'spiffe://td/';
    const max = `${prefix}${'a'.repeat(2048 - prefix.length)}`;
    assert.equal(parseSpiffeId(max).id.length, 2048);
    refused(() => parseSpiffeId(`${max}b`), /longer than 2048 bytes/);
  });

  test('long bad values are cut short in the message', () => {
    assert.throws(
      () => parseSpiffeId(`spiffe://td/${'a'.repeat(3000)}`),
      (error: Error) => error.message.length < 300,
    );
  });
});

describe('spiffeId and parseTrustDomain', () => {
  test('builds an ID from a trust domain and segments', () => {
    assert.equal(spiffeId('example.org'), 'spiffe://example.org');
    assert.equal(spiffeId('example.org', 'ns', 'prod', 'sa', 'api'), 'spiffe://example.org/ns/prod/sa/api');
  });

  test('refuses a bad trust domain', () => {
    refused(
      () => spiffeId('Example.org', 'a'),
      /invalid trust domain "Example\.org": trust domain may contain only/,
    );
  });

  test('refuses bad segments, naming them', () => {
    refused(() => spiffeId('td', ''), /invalid SPIFFE ID path segment "": it is empty/);
    refused(() => spiffeId('td', 'a/b'), /segment "a\/b": it may not contain "\/"/);
    refused(() => spiffeId('td', '..'), /segment "\.\.": path segments may not be/);
    refused(() => spiffeId('td', 'a b'), /segment "a b": path segments may contain only/);
  });

  test('refuses an ID that becomes too long', () => {
    refused(() => spiffeId('td', 'a'.repeat(1000), 'b'.repeat(1100)), /longer than 2048 bytes/);
  });

  test('parseTrustDomain accepts a bare trust domain', () => {
    assert.equal(parseTrustDomain('prod.example.org'), 'prod.example.org');
  });

  test('parseTrustDomain refuses a spiffe:// ID with a hint', () => {
    refused(() => parseTrustDomain('spiffe://example.org'), /give the bare name, without "spiffe:\/\/"/);
  });

  test('parseTrustDomain refuses empty, uppercase, ports, paths and userinfo', () => {
    refused(() => parseTrustDomain(''), /trust domain is empty/);
    refused(() => parseTrustDomain('Example.org'), /lowercase/);
    refused(() => parseTrustDomain('example.org:443'), /port/);
    refused(() => parseTrustDomain('example.org/a'), /may contain only/);
    refused(() => parseTrustDomain('u@example.org'), /userinfo/);
  });
});

describe('ipRange', () => {
  test('IPv4 and IPv6 ranges: canonical value and address||mask bytes', () => {
    assert.deepEqual(ipRange('10.0.0.0/8'), {
      value: '10.0.0.0/8',
      bytes: Buffer.from([10, 0, 0, 0, 255, 0, 0, 0]),
    });
    assert.deepEqual(ipRange('192.168.4.0/22').bytes, Buffer.from([192, 168, 4, 0, 255, 255, 252, 0]));
    assert.deepEqual(ipRange('0.0.0.0/0').bytes, Buffer.alloc(8));
    assert.deepEqual(ipRange('1.2.3.4/32').bytes, Buffer.from([1, 2, 3, 4, 255, 255, 255, 255]));
    const v6 = ipRange('FD00:0::/8');
    assert.equal(v6.value, 'fd00::/8');
    assert.deepEqual(
      v6.bytes,
      Buffer.concat([
        Buffer.from('fd000000000000000000000000000000', 'hex'),
        Buffer.from('ff000000000000000000000000000000', 'hex'),
      ]),
    );
    assert.equal(
      ipRange('2001:db8::/127').bytes.subarray(16).toString('hex'),
      'fffffffffffffffffffffffffffffffe',
    );
  });

  test('refuses host bits set, suggesting the network', () => {
    refused(
      () => ipRange('10.0.0.1/8'),
      /^invalid IP range "10\.0\.0\.1\/8": host bits are set \(did you mean 10\.0\.0\.0\/8\?\)$/,
    );
    refused(() => ipRange('2001:db8::1/64'), /did you mean 2001:db8::\/64\?/);
  });

  test('refuses a bad prefix length', () => {
    refused(() => ipRange('10.0.0.0/33'), /prefix length must be a number from 0 to 32/);
    refused(() => ipRange('::/129'), /from 0 to 128/);
    refused(() => ipRange('10.0.0.0/08'), /prefix length/);
    refused(() => ipRange('10.0.0.0/'), /prefix length/);
    refused(() => ipRange('10.0.0.0/-1'), /prefix length/);
  });

  test('refuses a missing prefix or a bad address', () => {
    refused(() => ipRange('10.0.0.0'), /expected address\/prefix/);
    refused(() => ipRange('10.0.0.0/8/8'), /expected address\/prefix/);
    refused(() => ipRange('example.com/8'), /"example\.com" is not an IP address/);
    refused(() => ipRange('fe80::%eth0/64'), /is not an IP address/);
  });
});
