// Certificate inserts of `sigil server --workers N` on SQLite, made by the
// primary alone. Every Sign inserts one certificate; SQLite lets one process
// write at a time, and a process that finds the file locked sleeps in its
// busy handler (1 ms, then longer) instead of joining the writer's group
// commit. Measured on 2 cores (4,000 inserts, 32 in flight): one process
// 2,400-3,100 inserts/s, the same split over two processes 1,550-1,780/s.
// So a worker hands its inserts to the primary over the IPC channel, where
// they join the primary's own group commits, and answers the call once the
// primary has committed: the same durability, one writer. Everything else a
// worker writes (revocations, tokens, nodes) is rare and stays a transaction
// of its own, which also keeps every limit a store transaction.
import { SigilError } from '../errors.ts';
import type { CertificateRecord, Store } from '../store/store.ts';

/** A CertificateRecord as JSON carries it: the DER in base64, instants in milliseconds. */
export interface EncodedCertificate
  extends Omit<CertificateRecord, 'der' | 'notBefore' | 'notAfter' | 'issuedAt' | 'revokedAt'> {
  readonly der: string;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly issuedAt: number;
  readonly revokedAt: number | null;
}

/** Worker -> primary: insert this certificate; primary -> worker: done (error: null) or refused. */
export interface InsertRequest {
  readonly type: 'insert';
  readonly id: number;
  readonly record: EncodedCertificate;
}
export interface InsertReply {
  readonly type: 'inserted';
  readonly id: number;
  readonly error: { readonly code: string | null; readonly message: string } | null;
}

/**
 * The worker's store with insertCertificate sent to the primary (`send`);
 * `settle` takes the primary's replies.
 */
export class ForwardedCertificateWrites {
  readonly store: Store;
  readonly #waiting = new Map<number, { resolve: () => void; reject: (error: Error) => void }>();
  #next = 0;

  constructor(inner: Store, send: (request: InsertRequest) => void) {
    const insertCertificate = (record: CertificateRecord): Promise<void> =>
      new Promise((resolve, reject) => {
        const id = this.#next++;
        this.#waiting.set(id, { resolve, reject });
        send({ type: 'insert', id, record: encodeCertificate(record) });
      });
    this.store = new Proxy(inner, {
      get(target, property) {
        if (property === 'insertCertificate') return insertCertificate;
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  }

  settle(reply: InsertReply): void {
    const waiting = this.#waiting.get(reply.id);
    if (!waiting) return;
    this.#waiting.delete(reply.id);
    if (reply.error === null) waiting.resolve();
    else waiting.reject(errorOf(reply.error));
  }

  /** The primary is gone: nothing in flight will be answered. */
  failAll(): void {
    for (const { reject } of this.#waiting.values()) {
      reject(new SigilError('internal', 'the server primary went away before the certificate was stored'));
    }
    this.#waiting.clear();
  }
}

/** The primary's side: inserts one worker's certificate into its own store and says how it went. */
export async function insertForWorker(store: Store, request: InsertRequest): Promise<InsertReply> {
  try {
    await store.insertCertificate(decodeCertificate(request.record));
    return { type: 'inserted', id: request.id, error: null };
  } catch (error) {
    return {
      type: 'inserted',
      id: request.id,
      error: {
        code: error instanceof SigilError ? error.code : null,
        message: error instanceof Error ? error.message : String(error),
      },
    };
  }
}

function encodeCertificate(record: CertificateRecord): EncodedCertificate {
  return {
    ...record,
    der: record.der.toString('base64'),
    notBefore: record.notBefore.getTime(),
    notAfter: record.notAfter.getTime(),
    issuedAt: record.issuedAt.getTime(),
    revokedAt: record.revokedAt?.getTime() ?? null,
  };
}

function decodeCertificate(encoded: EncodedCertificate): CertificateRecord {
  return {
    ...encoded,
    der: Buffer.from(encoded.der, 'base64'),
    notBefore: new Date(encoded.notBefore),
    notAfter: new Date(encoded.notAfter),
    issuedAt: new Date(encoded.issuedAt),
    revokedAt: encoded.revokedAt === null ? null : new Date(encoded.revokedAt),
  };
}

function errorOf(error: NonNullable<InsertReply['error']>): Error {
  return error.code === null
    ? new Error(error.message)
    : new SigilError(error.code as SigilError['code'], error.message);
}
