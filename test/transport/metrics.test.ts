import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { register as globalRegistry, Registry } from 'prom-client';
import { dnsName, uriName } from '../../src/pki/names.ts';
import { serveMetrics } from '../../src/server/metrics-http.ts';
import { authorizationInterceptor } from '../../src/transport/authorization.ts';
import {
  HANDSHAKE_FAILURE_REASONS,
  type HandshakeFailureReason,
  handshakeFailureReason,
  TransportMetrics,
} from '../../src/transport/metrics.ts';
import { eventually } from '../support/eventually.ts';
import { failureOf } from '../support/failure.ts';
import { refusal } from '../support/refusals.ts';
import { connect, startServer, ThrowawayCa } from './interceptor-fixtures.ts';

const ALICE = 'spiffe://td/client/alice';
const ca = new ThrowawayCa();
const alice = ca.client(ALICE);

/** The value of one series (for a histogram: `${name}_count`), or 0 when it does not exist. */
async function series(
  registry: Registry,
  name: string,
  labels: Record<string, string>,
  suffix = '',
): Promise<number> {
  const metric = registry.getSingleMetric(name);
  assert.ok(metric, `metric ${name} is registered`);
  const data = await metric.get();
  const found = data.values.find(
    (entry) =>
      ((entry as { metricName?: string }).metricName ?? name) === name + suffix &&
      Object.entries(labels).every(([key, expected]) => String(entry.labels[key]) === expected) &&
      Object.keys(entry.labels).length === Object.keys(labels).length,
  );
  return found?.value ?? 0;
}

const value = (registry: Registry, name: string, labels: Record<string, string>) =>
  series(registry, name, labels);
const histogramCount = (registry: Registry, name: string, labels: Record<string, string>) =>
  series(registry, name, labels, '_count');

function get(
  url: string,
  method = 'GET',
): Promise<{ status: number; type: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(url, { method }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({
          status: response.statusCode ?? 0,
          type: response.headers['content-type'],
          body: Buffer.concat(chunks).toString(),
        }),
      );
    });
    request.on('error', reject);
    request.end();
  });
}

const unaryLabels = (method: string) => ({
  grpc_service: 'test.Echo',
  grpc_method: method,
  grpc_type: 'unary',
});

describe('transport metrics', () => {
  test('after N calls with known outcomes the counters and histogram counts are exactly N', async () => {
    const metrics = new TransportMetrics();
    const server = await startServer({ ca, interceptors: [metrics.serverInterceptor] });
    const client = connect(server.port, ca, alice, { interceptors: [metrics.clientInterceptor] });
    const ok = 5;
    const failed = 3;
    try {
      for (let i = 0; i < ok; i++) await client.unary('Unary');
      for (let i = 0; i < failed; i++) {
        assert.equal((await failureOf(client.fail(grpc.status.NOT_FOUND))).code, grpc.status.NOT_FOUND);
      }
      const replies = await client.stream(['a', 'b', 'c']);
      assert.equal(replies.length, 3);
    } finally {
      client.close();
      await server.close();
    }
    const registry = metrics.registry;
    for (const side of ['server', 'client']) {
      const started = `sigil_grpc_${side}_started_total`;
      const handled = `sigil_grpc_${side}_handled_total`;
      const seconds = `sigil_grpc_${side}_handling_seconds`;
      assert.equal(await value(registry, started, unaryLabels('Unary')), ok, `${side} started Unary`);
      assert.equal(await value(registry, started, unaryLabels('Fail')), failed, `${side} started Fail`);
      assert.equal(await value(registry, handled, { ...unaryLabels('Unary'), grpc_code: 'OK' }), ok);
      assert.equal(
        await value(registry, handled, { ...unaryLabels('Fail'), grpc_code: 'NOT_FOUND' }),
        failed,
      );
      assert.equal(await value(registry, handled, { ...unaryLabels('Fail'), grpc_code: 'OK' }), 0);
      assert.equal(
        await histogramCount(registry, seconds, unaryLabels('Unary')),
        ok,
        `${side} histogram Unary`,
      );
      assert.equal(
        await histogramCount(registry, seconds, unaryLabels('Fail')),
        failed,
        `${side} histogram Fail`,
      );
      const stream = { grpc_service: 'test.Echo', grpc_method: 'Stream', grpc_type: 'bidi_stream' };
      assert.equal(await value(registry, started, stream), 1);
      assert.equal(await value(registry, handled, { ...stream, grpc_code: 'OK' }), 1);
      assert.equal(await histogramCount(registry, seconds, stream), 1);
    }
    // Its own registry, never prom-client's global one.
    assert.equal(globalRegistry.getSingleMetric('sigil_grpc_server_started_total'), undefined);
  });

  test('calls that end without a status are counted once: CANCELLED, DEADLINE_EXCEEDED', async () => {
    const metrics = new TransportMetrics();
    const server = await startServer({ ca, interceptors: [metrics.serverInterceptor] });
    const client = connect(server.port, ca, alice, { interceptors: [metrics.clientInterceptor] });
    const hang = { grpc_service: 'test.Echo', grpc_method: 'Hang', grpc_type: 'bidi_stream' };
    const handled = (side: string, code: string) =>
      value(metrics.registry, `sigil_grpc_${side}_handled_total`, { ...hang, grpc_code: code });
    /** The server hears of the end asynchronously (RST_STREAM or its own deadline timer). */
    const serverTotal = async (expected: number): Promise<void> => {
      const total = async () => histogramCount(metrics.registry, 'sigil_grpc_server_handling_seconds', hang);
      await eventually(`the server to count ${expected}`, async () => (await total()) >= expected);
      assert.equal(await total(), expected);
    };
    try {
      // The client cancels after the handler started; the handler never sends a status.
      assert.equal((await client.hang()).code, grpc.status.CANCELLED);
      assert.equal(await handled('client', 'CANCELLED'), 1);
      await serverTotal(1);
      assert.equal(await handled('server', 'CANCELLED'), 1);

      // The deadline passes. The client cancels at its own deadline, which runs a
      // hair ahead of the server's, so the server may see either ending; it is
      // counted exactly once, as one of the two.
      assert.equal((await client.hang(100)).code, grpc.status.DEADLINE_EXCEEDED);
      assert.equal(await handled('client', 'DEADLINE_EXCEEDED'), 1);
      await serverTotal(2);
      assert.equal(
        (await handled('server', 'DEADLINE_EXCEEDED')) + (await handled('server', 'CANCELLED')),
        2,
      );
      assert.equal(await value(metrics.registry, 'sigil_grpc_server_started_total', hang), 2);
    } finally {
      client.close();
      await server.close();
    }
  });

  test('authorization denials are counted with their code when the metrics interceptor runs first', async () => {
    const metrics = new TransportMetrics();
    const server = await startServer({
      ca,
      interceptors: [
        metrics.serverInterceptor,
        authorizationInterceptor({ '/test.Echo/Unary': { spiffeIds: ['spiffe://td/client/bob'] } }),
      ],
    });
    const client = connect(server.port, ca, alice);
    try {
      assert.equal((await failureOf(client.unary('Unary'))).code, grpc.status.PERMISSION_DENIED);
      assert.equal((await failureOf(client.unary('Other'))).code, grpc.status.PERMISSION_DENIED);
    } finally {
      client.close();
      await server.close();
    }
    const handled = 'sigil_grpc_server_handled_total';
    for (const method of ['Unary', 'Other']) {
      assert.equal(
        await value(metrics.registry, handled, { ...unaryLabels(method), grpc_code: 'PERMISSION_DENIED' }),
        1,
      );
    }
    assert.equal(server.log.calls.length, 0);
  });

  test('the /metrics endpoint serves them with the Prometheus content type', async () => {
    const metrics = new TransportMetrics();
    const server = await startServer({ ca, interceptors: [metrics.serverInterceptor] });
    const client = connect(server.port, ca, alice);
    const endpoint = await serveMetrics(metrics);
    try {
      await client.unary('Unary');
      await client.unary('Unary');
      assert.equal(endpoint.host, '127.0.0.1');
      assert.ok(endpoint.port > 0);
      const scrape = await get(endpoint.url);
      assert.equal(scrape.status, 200);
      assert.equal(scrape.type, 'text/plain; version=0.0.4; charset=utf-8');
      assert.match(
        scrape.body,
        /^sigil_grpc_server_handled_total\{grpc_service="test\.Echo",grpc_method="Unary",grpc_type="unary",grpc_code="OK"\} 2$/m,
      );
      assert.match(
        scrape.body,
        /^sigil_grpc_server_handling_seconds_count\{grpc_service="test\.Echo",grpc_method="Unary",grpc_type="unary"\} 2$/m,
      );
      assert.match(scrape.body, /^# TYPE sigil_tls_handshake_failures_total counter$/m);
      assert.match(scrape.body, /^sigil_tls_handshake_failures_total\{reason="unknown_ca"\} 0$/m);
      assert.doesNotMatch(scrape.body, /spiffe:/, 'no identity in any label');

      const head = await get(endpoint.url, 'HEAD');
      assert.equal(head.status, 200);
      assert.equal(head.type, 'text/plain; version=0.0.4; charset=utf-8');
      assert.equal(head.body, '');
      assert.equal((await get(`${endpoint.url}?x=1`)).status, 200);
      assert.equal((await get(`http://127.0.0.1:${endpoint.port}/`)).status, 404);
      assert.equal((await get(`http://127.0.0.1:${endpoint.port}/metricsx`)).status, 404);
      assert.equal((await get(endpoint.url, 'POST')).status, 405);
    } finally {
      client.close();
      await server.close();
      await endpoint.close();
    }
  });

  test('the /metrics endpoint refuses plaintext off loopback and bad ports', async () => {
    const metrics = new TransportMetrics();
    await assert.rejects(
      serveMetrics(metrics, { host: '0.0.0.0' }),
      refusal(null, /plaintext is for loopback only/),
    );
    await assert.rejects(serveMetrics(metrics, { port: 70000 }), refusal(null, /metrics port/));
    // A prom-client Registry is a metrics source too.
    const registry = new Registry();
    const endpoint = await serveMetrics(registry, { host: '127.0.0.1', port: 0 });
    try {
      assert.equal((await get(endpoint.url)).status, 200);
    } finally {
      await endpoint.close();
    }
  });

  test('the /metrics endpoint serves HTTPS (TLS 1.3) when given tls options', async () => {
    const pair = ca.server();
    const endpoint = await serveMetrics(new TransportMetrics(), {
      // Tests never bind beyond loopback; off-loopback hosts are only checked for refusal.
      host: '127.0.0.1',
      tls: { cert: pair.cert, key: pair.key },
    });
    try {
      assert.equal(endpoint.url, `https://127.0.0.1:${endpoint.port}/metrics`);
      const scrape = await new Promise<{ status: number; protocol: string | null; body: string }>(
        (resolve, reject) => {
          const request = https.get(
            `https://127.0.0.1:${endpoint.port}/metrics`,
            { ca: ca.pem, servername: 'localhost', agent: false },
            (response) => {
              const protocol = (response.socket as tls.TLSSocket).getProtocol();
              const chunks: Buffer[] = [];
              response.on('data', (chunk: Buffer) => chunks.push(chunk));
              response.on('end', () =>
                resolve({
                  status: response.statusCode ?? 0,
                  protocol,
                  body: Buffer.concat(chunks).toString(),
                }),
              );
            },
          );
          request.on('error', reject);
        },
      );
      assert.equal(scrape.status, 200);
      assert.equal(scrape.protocol, 'TLSv1.3');
      assert.match(scrape.body, /sigil_tls_handshake_failures_total/);
    } finally {
      await endpoint.close();
    }
  });

  test('expiry gauge is positive and about the cert lifetime', async () => {
    const hour = 3600;
    const server = ca.issue('server', [dnsName('localhost')], hour * 1000);
    const client = ca.issue('client', [uriName(ALICE)], 2 * hour * 1000);
    let current: Date | null = server.notAfter;
    const metrics = new TransportMetrics({ certificateExpiry: { server: () => current } });
    metrics.setCertificateExpiry('client', () => client.notAfter);
    const serverSeconds = await value(metrics.registry, 'sigil_certificate_expiry_seconds', {
      role: 'server',
    });
    const clientSeconds = await value(metrics.registry, 'sigil_certificate_expiry_seconds', {
      role: 'client',
    });
    assert.ok(
      serverSeconds > 0 && serverSeconds <= hour && serverSeconds > hour - 300,
      `server ${serverSeconds}`,
    );
    assert.ok(clientSeconds > hour && clientSeconds <= 2 * hour && clientSeconds > 2 * hour - 300);
    // Computed at scrape time from the getter: no certificate, no series.
    current = null;
    const text = await metrics.metrics();
    assert.doesNotMatch(text, /role="server"/);
    assert.match(text, /^sigil_certificate_expiry_seconds\{role="client"\} \d/m);
  });

  test('handshake failure reasons mapped from representative Node errors', () => {
    const nodeError = (code: string, message: string): Error => Object.assign(new Error(message), { code });
    const cases: [unknown, { authorizationError?: unknown } | undefined, HandshakeFailureReason][] = [
      [nodeError('ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'tlsv1 alert unknown ca'), undefined, 'unknown_ca'],
      [
        nodeError('ECONNRESET', 'socket hang up'),
        { authorizationError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' },
        'unknown_ca',
      ],
      [
        nodeError('SELF_SIGNED_CERT_IN_CHAIN', 'self-signed certificate in certificate chain'),
        undefined,
        'unknown_ca',
      ],
      [
        nodeError('ECONNRESET', 'socket hang up'),
        { authorizationError: 'CERT_HAS_EXPIRED' },
        'certificate_expired',
      ],
      [
        nodeError('ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED', 'sslv3 alert certificate expired'),
        undefined,
        'certificate_expired',
      ],
      [nodeError('CERT_HAS_EXPIRED', 'certificate has expired'), undefined, 'certificate_expired'],
      [
        Object.assign(
          nodeError('ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE', 'peer did not return a certificate'),
          {
            reason: 'peer did not return a certificate',
          },
        ),
        { authorizationError: null },
        'no_certificate',
      ],
      [
        nodeError('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', 'tlsv13 alert certificate required'),
        undefined,
        'no_certificate',
      ],
      [nodeError('ERR_SSL_UNSUPPORTED_PROTOCOL', 'unsupported protocol'), undefined, 'wrong_version'],
      [nodeError('ERR_SSL_WRONG_VERSION_NUMBER', 'wrong version number'), undefined, 'wrong_version'],
      [nodeError('ERR_SSL_HTTP_REQUEST', 'http request'), undefined, 'wrong_version'],
      [
        nodeError('ECONNRESET', 'socket hang up'),
        { authorizationError: 'INVALID_PURPOSE' },
        'bad_certificate',
      ],
      [nodeError('ERR_TLS_HANDSHAKE_TIMEOUT', 'TLS handshake timeout'), undefined, 'timeout'],
      [nodeError('ECONNRESET', 'socket hang up'), { authorizationError: null }, 'other'],
      [new Error('something else entirely'), undefined, 'other'],
      // sigil's MtlsServer hands over { reason, message }.
      [
        { reason: 'CERT_REVOKED', message: 'certificate serial 1f is revoked' },
        undefined,
        'certificate_revoked',
      ],
      [{ reason: 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', message: 'x' }, undefined, 'unknown_ca'],
      ['CERT_NOT_YET_VALID', undefined, 'bad_certificate'],
      // No code, only OpenSSL's text.
      [new Error('error:0A000418:SSL routines::tlsv1 alert unknown ca'), undefined, 'unknown_ca'],
      [undefined, undefined, 'other'],
    ];
    for (const [failure, socket, expected] of cases) {
      const reason = handshakeFailureReason(failure, socket);
      assert.equal(reason, expected, `${JSON.stringify(failure)} ${JSON.stringify(socket)}`);
      assert.ok(HANDSHAKE_FAILURE_REASONS.includes(reason));
    }
    const metrics = new TransportMetrics();
    assert.equal(
      metrics.recordHandshakeFailure({ reason: 'CERT_REVOKED', message: 'm' }),
      'certificate_revoked',
    );
  });

  test('handshake failure from a real unknown-CA client is mapped to unknown_ca', async () => {
    const metrics = new TransportMetrics();
    const pair = ca.server();
    const server = tls.createServer({
      cert: pair.cert,
      key: pair.key,
      ca: ca.pem,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
    });
    const stopWatching = metrics.watchTlsServer(server);
    const failures: HandshakeFailureReason[] = [];
    const seen = new Promise<void>((resolve) => {
      server.on('tlsClientError', (error, socket) => {
        failures.push(handshakeFailureReason(error, socket));
        if (failures.length === 3) resolve();
      });
    });
    server.on('secureConnection', (socket) => socket.end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const attempt = (options: tls.ConnectionOptions): Promise<void> =>
      new Promise((resolve) => {
        const socket = tls.connect({
          host: '127.0.0.1',
          port,
          servername: 'localhost',
          ca: ca.pem,
          ...options,
        });
        socket.on('error', () => resolve());
        socket.on('close', () => resolve());
        socket.resume();
      });
    const strangers = new ThrowawayCa('another CA');
    const stranger = strangers.client('spiffe://td/client/mallory');
    try {
      await attempt({ cert: stranger.cert, key: stranger.key });
      await attempt({});
      await attempt({ cert: alice.cert, key: alice.key, maxVersion: 'TLSv1.2' });
      await seen;
    } finally {
      stopWatching();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    assert.deepEqual(failures.sort(), ['no_certificate', 'unknown_ca', 'wrong_version']);
    const counter = 'sigil_tls_handshake_failures_total';
    assert.equal(await value(metrics.registry, counter, { reason: 'unknown_ca' }), 1);
    assert.equal(await value(metrics.registry, counter, { reason: 'no_certificate' }), 1);
    assert.equal(await value(metrics.registry, counter, { reason: 'wrong_version' }), 1);
    assert.equal(await value(metrics.registry, counter, { reason: 'other' }), 0);
  });

  test('one TransportMetrics per registry', () => {
    const registry = new Registry();
    const metrics = new TransportMetrics({ registry });
    assert.equal(metrics.registry, registry);
    assert.throws(
      () => new TransportMetrics({ registry }),
      refusal(null, /one TransportMetrics per registry/),
    );
  });
});
