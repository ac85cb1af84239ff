// The client side of issue #10's "errors a person can act on": the texts a
// failed connection reaches sigil's client code as (grpc-js's "Last error",
// Node's error codes, BoringSSL's names, sigil's own connector) and the one
// line each becomes. The end-to-end cases are in handshake-diagnostics.test.ts.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RpcError, rpcError } from '../../src/client/rpc.ts';
import { connectionRefusal } from '../../src/transport/connection-failure.ts';

const target = '127.0.0.1:7443';

describe('connectionRefusal', () => {
  test('an alert from the server, however the TLS stack words it, is the server refusing this client', () => {
    const forms: [string, string][] = [
      [
        '40DD42FBB37F0000:error:0A000414:SSL routines:ssl3_read_bytes:ssl/tls alert certificate revoked:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:918:SSL alert number 44',
        'certificate_revoked',
      ],
      ['error:10000414:SSL routines:OPENSSL_internal:SSLV3_ALERT_CERTIFICATE_REVOKED', 'certificate_revoked'],
      ['ERR_SSL_SSL/TLS_ALERT_CERTIFICATE_EXPIRED', 'certificate_expired'],
      ['tlsv1 alert unknown ca', 'unknown_ca'],
      ['ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'unknown_ca'],
      ['sslv3 alert unsupported certificate', 'unsupported_certificate'],
      ['sslv3 alert bad certificate', 'bad_certificate'],
      ['tlsv1 alert access denied', 'access_denied'],
      ['tlsv13 alert certificate required', 'certificate_required'],
      ['ssl/tls alert certificate unknown', 'certificate_unknown'],
      // As client/control-plane-channel.ts words a failed anonymous connection.
      [
        `cannot reach the sigil server at ${target}: 40…:error:0A000419:SSL routines::tlsv1 alert access denied`,
        'access_denied',
      ],
    ];
    const messages = new Set<string>();
    for (const [text, alert] of forms) {
      const refusal = connectionRefusal(text, target);
      assert.equal(refusal?.kind, 'server-refused-client', text);
      assert.equal(refusal?.alert, alert, text);
      assert.match(
        refusal?.message ?? '',
        new RegExp(`^the server at ${target} .*\\(TLS alert ${alert}\\)$`),
      );
      messages.add(refusal?.message ?? '');
    }
    assert.equal(messages.size, 8, 'one line per alert');
  });

  test("sigil's connector says which side gave up", () => {
    const refused = connectionRefusal(
      "SigilError: this client refused the server's certificate: the server presented spiffe://x/other, expected a replica of x",
      target,
    );
    assert.equal(refused?.kind, 'client-refused-server');
    assert.equal(
      refused?.message,
      `this client refused the certificate of the server at ${target}: the server presented spiffe://x/other, expected a replica of x`,
    );
    const unusable = connectionRefusal(
      'SigilError: this client\'s certificate cannot be used: certificate "CN=node" expired at 2026-01-01T00:00:00.000Z',
      target,
    );
    assert.equal(unusable?.kind, 'client-certificate-unusable');
    assert.match(
      unusable?.message ?? '',
      /^cannot connect to 127\.0\.0\.1:7443: this client's certificate cannot be used: .*expired/,
    );
  });

  test("another connector's report of OpenSSL's verdict on the server's chain is this client refusing the server", () => {
    for (const text of [
      'unable to verify the first certificate',
      'self-signed certificate in certificate chain',
      'certificate has expired',
    ]) {
      assert.equal(connectionRefusal(text, target)?.kind, 'client-refused-server', text);
    }
  });

  test('anything else is not a refusal', () => {
    for (const text of ['read ECONNRESET', 'connect ECONNREFUSED 127.0.0.1:7443', 'Failed to connect', '']) {
      assert.equal(connectionRefusal(text, target), undefined, text);
    }
  });

  test('rpcError turns grpc-js\'s UNAVAILABLE details into the line, and keeps "cannot reach" for the rest', () => {
    const unavailable = (details: string) =>
      Object.assign(new Error(details), { code: 14, details, metadata: undefined });
    const refused = rpcError(
      unavailable(
        'No connection established. Last error: 40DD42FBB37F0000:error:0A000414:SSL routines:ssl3_read_bytes:ssl/tls alert certificate revoked:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:918:SSL alert number 44\n (2026-12-07T15:54:23.786Z). Resolution note: ',
      ),
      target,
    );
    assert.ok(refused instanceof RpcError);
    assert.equal(refused.status, 14, 'still UNAVAILABLE: no call reached the server');
    assert.equal(
      refused.message,
      `the server at ${target} refused this client's certificate: it has been revoked (TLS alert certificate_revoked)`,
    );
    const down = rpcError(
      unavailable(
        'No connection established. Last error: connect ECONNREFUSED 127.0.0.1:7443 (2026-12-07T15:54:23.786Z). Resolution note: ',
      ),
      target,
    );
    assert.equal(
      down.message,
      `cannot reach the sigil server at ${target}: connect ECONNREFUSED 127.0.0.1:7443`,
    );
    assert.equal((down as RpcError).refusal, undefined);
  });
});
