// Certificate inserts of `sigil server --workers N` on SQLite, made by the
// primary alone. Every Sign inserts one certificate; SQLite lets one process
// write at a time, and a process that finds the file locked sleeps in its
// busy handler (1 ms, then longer) instead of joining the writer's group
// commit. Measured on 2 cores (4,000 inserts, 32 in flight): one process
// 2,400-3,100 inserts/s, the same split over two processes 1,550-1,780/s.
// So a worker hands its inserts to the primary over the IPC channel, where
// they join the primary's own group commits, and answers the call once the
// primary has committed: the same durability, one writer. Everything else a
// worker writes (revocations, tokens, nodes other than a renewal's pointer) is rare and stays a transaction
// of its own, which also keeps every limit a store transaction.
import { SigilError } from '../errors.ts';
import type { CertificateRecord, NodeRecord, NodeStep, Store } from '../store/store.ts';

/** A CertificateRecord as JSON carries it: the DER in base64, instants in milliseconds. */
export interface EncodedCertificate
  extends Omit<CertificateRecord, 'der' | 'notBefore' | 'notAfter' | 'issuedAt' | 'revokedAt'> {
  readonly der: string;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly issuedAt: number;
  readonly revokedAt: number | null;
}

/** The node step of Store.insertNodeCertificate, as JSON carries it. */
interface EncodedNodeStep extends Omit<NodeStep, 'at'> {
  readonly at: number;
}

/** A NodeRecord as JSON carries it. */
interface EncodedNode extends Omit<NodeRecord, 'publicKey' | 'createdAt' | 'updatedAt'> {
  readonly publicKey: string;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/**
 * Worker -> primary: insert this certificate (with `node`: and point the node
 * at it, insertNodeCertificate); primary -> worker: done (error: null, and the
 * node as it now is) or refused.
 */
export interface InsertRequest {
  readonly type: 'insert';
  readonly id: number;
  readonly record: EncodedCertificate;
  readonly node?: EncodedNodeStep;
}
export interface InsertReply {
  readonly type: 'inserted';
  readonly id: number;
  readonly error: { readonly code: string | null; readonly message: string } | null;
  readonly node?: EncodedNode | null;
}

/**
 * The worker's store with insertCertificate sent to the primary (`send`);
 * `settle` takes the primary's replies.
 */
export class ForwardedCertificateWrites {
  readonly store: Store;
  readonly #waiting = new Map<
    number,
    { resolve: (node: EncodedNode | null | undefined) => void; reject: (error: Error) => void }
  >();
  #next = 0;

  constructor(inner: Store, send: (request: InsertRequest) => void) {
    const forward = (record: CertificateRecord, node?: EncodedNodeStep) =>
      new Promise<EncodedNode | null | undefined>((resolve, reject) => {
        const id = this.#next++;
        this.#waiting.set(id, { resolve, reject });
        send({ type: 'insert', id, record: encodeCertificate(record), ...(node ? { node } : {}) });
      });
    const insertCertificate = async (record: CertificateRecord): Promise<void> => {
      await forward(record);
    };
    const insertNodeCertificate: Store['insertNodeCertificate'] = async (record, node) => {
      const updated = await forward(record, { ...node, at: node.at.getTime() });
      return updated ? decodeNode(updated) : null;
    };
    this.store = new Proxy(inner, {
      get(target, property) {
        if (property === 'insertCertificate') return insertCertificate;
        if (property === 'insertNodeCertificate') return insertNodeCertificate;
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  }

  settle(reply: InsertReply): void {
    const waiting = this.#waiting.get(reply.id);
    if (!waiting) return;
    this.#waiting.delete(reply.id);
    if (reply.error === null) waiting.resolve(reply.node);
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
    const record = decodeCertificate(request.record);
    if (!request.node) {
      await store.insertCertificate(record);
      return { type: 'inserted', id: request.id, error: null };
    }
    const node = await store.insertNodeCertificate(record, {
      ...request.node,
      at: new Date(request.node.at),
    });
    return { type: 'inserted', id: request.id, error: null, node: node ? encodeNode(node) : null };
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

function encodeNode(node: NodeRecord): EncodedNode {
  return {
    ...node,
    publicKey: node.publicKey.toString('base64'),
    createdAt: node.createdAt.getTime(),
    updatedAt: node.updatedAt.getTime(),
  };
}

function decodeNode(encoded: EncodedNode): NodeRecord {
  return {
    ...encoded,
    publicKey: Buffer.from(encoded.publicKey, 'base64'),
    createdAt: new Date(encoded.createdAt),
    updatedAt: new Date(encoded.updatedAt),
  };
}

function errorOf(error: NonNullable<InsertReply['error']>): Error {
  return error.code === null
    ? new Error(error.message)
    : new SigilError(error.code as SigilError['code'], error.message);
}
