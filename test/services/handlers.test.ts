// The one mapping from SigilError codes to gRPC statuses, through a real
// server: our errors keep their message, anything else becomes a generic
// INTERNAL that leaks nothing, and the failure is reported to the server log.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { type ErrorCode, SigilError } from '../../src/errors.ts';
import {
  INTERNAL_ERROR_MESSAGE,
  serverStreamHandler,
  statusForError,
  unaryHandler,
} from '../../src/services/handlers.ts';
import { MtlsServer } from '../../src/transport/mtls-server.ts';
import { bytes, rawMethod } from '../support/raw-methods.ts';
import { ManualMaterialSource, mtlsClient, TestCa } from '../transport/fixtures.ts';

const EXPECTED: Record<ErrorCode, grpc.status> = {
  invalid_argument: grpc.status.INVALID_ARGUMENT,
  not_found: grpc.status.NOT_FOUND,
  already_exists: grpc.status.ALREADY_EXISTS,
  failed_precondition: grpc.status.FAILED_PRECONDITION,
  permission_denied: grpc.status.PERMISSION_DENIED,
  unauthenticated: grpc.status.UNAUTHENTICATED,
  resource_exhausted: grpc.status.RESOURCE_EXHAUSTED,
  internal: grpc.status.INTERNAL,
};

describe('statusForError', () => {
  test('maps every SigilError code, keeping the message (except internal)', () => {
    for (const [code, status] of Object.entries(EXPECTED) as [ErrorCode, grpc.status][]) {
      const mapped = statusForError(new SigilError(code, `problem with field x (${code})`));
      assert.equal(mapped.code, status, code);
      assert.equal(
        mapped.details,
        code === 'internal' ? INTERNAL_ERROR_MESSAGE : `problem with field x (${code})`,
      );
    }
  });

  test('anything that is not a SigilError is INTERNAL with a generic message', () => {
    for (const error of [
      new Error('connect ECONNREFUSED postgres://sigil:hunter2@db'),
      new TypeError('cannot read properties of undefined'),
      'a string',
      undefined,
    ]) {
      const mapped = statusForError(error);
      assert.equal(mapped.code, grpc.status.INTERNAL);
      assert.equal(mapped.details, INTERNAL_ERROR_MESSAGE);
    }
  });
});

describe('handlers through a real server', () => {
  const ca = new TestCa('sigil handlers test CA');
  const service = {
    fail: rawMethod('/sigil.test.Fail/Fail'),
    stream: rawMethod('/sigil.test.Fail/Stream', 'response'),
  } satisfies grpc.ServiceDefinition;
  const reported: { method: string; code: number }[] = [];
  const onFailure = (path: string, _error: unknown, status: { code: number }) =>
    reported.push({ method: path, code: status.code });
  const failWith = (request: Buffer): never => {
    const what = request.toString();
    if (what === 'secret') throw new Error('the database password is hunter2');
    if (what === 'sync') throw new SigilError('not_found', 'thrown before any await');
    throw new SigilError(what as ErrorCode, `refused: ${what}`);
  };
  let server: MtlsServer;
  let client: grpc.Client;

  after(async () => {
    client?.close();
    await server?.close(100);
  });

  async function callFail(request: string): Promise<grpc.ServiceError> {
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(service.fail.path, bytes, bytes, Buffer.from(request), (error) =>
        error ? resolve(error) : reject(new Error('succeeded')),
      );
    });
  }

  test('setup', async () => {
    server = new MtlsServer({ material: new ManualMaterialSource(ca.material(ca.issueServer())) });
    server.addService(service, {
      fail: unaryHandler<Buffer, Buffer>({ method: service.fail.path, onFailure }, async (request) => {
        if (request.toString() === 'sync') return failWith(request);
        await Promise.resolve();
        return failWith(request);
      }),
      stream: serverStreamHandler<Buffer, Buffer>(
        { method: service.stream.path, onFailure },
        async (call) => {
          call.write(Buffer.from('first'));
          await Promise.resolve();
          throw new SigilError('permission_denied', 'no more for you');
        },
      ),
    });
    const port = await server.listen();
    client = mtlsClient(port, ca.rootPem, ca.issueClient());
  });

  test('SigilErrors become their status with their message', async () => {
    for (const code of [
      'invalid_argument',
      'not_found',
      'failed_precondition',
      'permission_denied',
    ] as const) {
      const error = await callFail(code);
      assert.equal(error.code, EXPECTED[code]);
      assert.equal(error.details, `refused: ${code}`);
    }
    const sync = await callFail('sync');
    assert.equal(sync.code, grpc.status.NOT_FOUND);
  });

  test('an unexpected error is INTERNAL, its message stays on the server', async () => {
    const error = await callFail('secret');
    assert.equal(error.code, grpc.status.INTERNAL);
    assert.equal(error.details, INTERNAL_ERROR_MESSAGE);
    assert.doesNotMatch(error.details, /hunter2/);
    assert.ok(reported.some((entry) => entry.code === grpc.status.INTERNAL));
  });

  test('a failing server stream ends with the mapped status after its messages', async () => {
    const messages: string[] = [];
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const call = client.makeServerStreamRequest(service.stream.path, bytes, bytes, Buffer.from('x'));
      call.on('data', (chunk: Buffer) => messages.push(chunk.toString()));
      call.on('error', () => {});
      call.on('status', resolve);
    });
    assert.deepEqual(messages, ['first']);
    assert.equal(status.code, grpc.status.PERMISSION_DENIED);
    assert.equal(status.details, 'no more for you');
  });
});
