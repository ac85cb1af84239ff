// The CAs a replica knows, read from the store: the root, every replica's
// intermediates, and the keys this replica can decrypt. It answers "which CA
// signs now" (this replica's newest unretired intermediate), "can I act as
// the root here", and "what goes in the trust bundle" (every CA that has not
// expired, so retired intermediates keep validating the leaves they issued).
//
// A CA record with no key of its own but the same public key as an earlier
// record of the same replica is a re-certified intermediate (the root holder
// extends another replica's intermediate without ever seeing its key); its
// key is the earlier record's, decrypted with that record's id.
import type { KeyObject } from 'node:crypto';
import { notFound, preconditionFailed, SigilError } from '../errors.ts';
import { type CertificateInfo, parseCertificate } from '../pki/certificate.ts';
import { Issuer } from '../pki/issuer.ts';
import { spkiDer } from '../pki/keys.ts';
import type { CaRecord, Store } from '../store/store.ts';
import { decryptCaKey } from './key-encryption.ts';

export const ROOT_CA_ID = 'root';

export function intermediateCaId(replicaId: string, generation: number): string {
  return `replica:${replicaId}:${generation}`;
}

/** The generation number of an intermediate CA id ("replica:<id>:<n>"), or 0. */
export function generationOf(caId: string): number {
  const n = Number(caId.slice(caId.lastIndexOf(':') + 1));
  return Number.isSafeInteger(n) ? n : 0;
}

export interface LoadedCa {
  readonly record: CaRecord;
  readonly info: CertificateInfo;
}

export class CaSet {
  readonly replicaId: string;
  readonly #cas: ReadonlyMap<string, LoadedCa>;
  readonly #signing: ReadonlyMap<string, { issuer: Issuer; key: KeyObject }>;

  private constructor(
    replicaId: string,
    cas: Map<string, LoadedCa>,
    signing: Map<string, { issuer: Issuer; key: KeyObject }>,
  ) {
    this.replicaId = replicaId;
    this.#cas = cas;
    this.#signing = signing;
  }

  /**
   * Reads every CA record and decrypts the keys this replica owns. A wrong
   * store key fails here, loudly, on the first own intermediate. The root key
   * is ours when it decrypts with our store key; any other outcome means it
   * is held by another replica or offline, which is not an error.
   */
  static async load(store: Store, replicaId: string, storeKey: Buffer): Promise<CaSet> {
    const records = await store.listCas();
    const cas = new Map<string, LoadedCa>();
    for (const record of records) {
      cas.set(record.id, {
        record,
        info: parseCertificate(record.certificate, `CA certificate "${record.id}"`),
      });
    }
    const signing = new Map<string, { issuer: Issuer; key: KeyObject }>();
    const root = cas.get(ROOT_CA_ID);
    if (root?.record.encryptedKey) {
      let key: KeyObject | null = null;
      try {
        key = decryptCaKey(root.record.encryptedKey, storeKey, ROOT_CA_ID);
      } catch (error) {
        if (!(error instanceof SigilError)) throw error; // else: encrypted with another replica's store key
      }
      if (key) signing.set(ROOT_CA_ID, { issuer: Issuer.fromCertificate(root.record.certificate, key), key });
    }
    const own = [...cas.values()].filter(
      (ca) => ca.record.kind === 'intermediate' && ca.record.replicaId === replicaId,
    );
    for (const ca of own) {
      const keyRecord = ca.record.encryptedKey
        ? ca.record
        : own.find((other) => other.record.encryptedKey && samePublicKey(other.info, ca.info))?.record;
      if (!keyRecord?.encryptedKey) continue; // e.g. adopted later; not usable here
      const key = decryptCaKey(keyRecord.encryptedKey, storeKey, keyRecord.id);
      signing.set(ca.record.id, { issuer: Issuer.fromCertificate(ca.record.certificate, key), key });
    }
    return new CaSet(replicaId, cas, signing);
  }

  get(caId: string): LoadedCa | undefined {
    return this.#cas.get(caId);
  }

  all(): LoadedCa[] {
    return [...this.#cas.values()];
  }

  root(): LoadedCa | undefined {
    return this.#cas.get(ROOT_CA_ID);
  }

  requireRoot(): LoadedCa {
    const root = this.root();
    if (!root) throw preconditionFailed('the store has no root CA');
    return root;
  }

  /** The root key, when this replica holds it (decryptable with our store key). */
  rootKey(): KeyObject | null {
    return this.#signing.get(ROOT_CA_ID)?.key ?? null;
  }

  rootIssuer(): Issuer | null {
    return this.#signing.get(ROOT_CA_ID)?.issuer ?? null;
  }

  /** An issuer for `caId` when this replica holds its key. */
  issuer(caId: string): Issuer | null {
    return this.#signing.get(caId)?.issuer ?? null;
  }

  /** The private key of `caId` when this replica holds it (for CRLs). */
  key(caId: string): KeyObject | null {
    return this.#signing.get(caId)?.key ?? null;
  }

  /** Intermediates of one replica (or all), newest generation first. */
  intermediates(replicaId?: string): LoadedCa[] {
    return [...this.#cas.values()]
      .filter(
        (ca) =>
          ca.record.kind === 'intermediate' && (replicaId === undefined || ca.record.replicaId === replicaId),
      )
      .sort((a, b) => generationOf(b.record.id) - generationOf(a.record.id));
  }

  /** The newest unretired, unexpired intermediate of `replicaId`, if any. */
  currentIntermediate(replicaId: string, now: Date): LoadedCa | undefined {
    return this.intermediates(replicaId).find(
      (ca) => ca.record.retiredAt === null && ca.info.notAfter.getTime() > now.getTime(),
    );
  }

  /** The CA this replica signs leaves with now, and its issuer. */
  signer(now: Date): { ca: LoadedCa; issuer: Issuer } {
    const ca = this.currentIntermediate(this.replicaId, now);
    const issuer = ca && this.#signing.get(ca.record.id)?.issuer;
    if (!ca || !issuer) {
      throw preconditionFailed(
        `replica "${this.replicaId}" has no valid intermediate CA to sign with (join it with a replica token, or rotate its intermediate on the replica holding the root key)`,
      );
    }
    return { ca, issuer };
  }

  /** Unexpired roots and intermediates, DER, for trust bundles. */
  bundle(now: Date): { roots: Buffer[]; intermediates: Buffer[] } {
    const live = [...this.#cas.values()].filter((ca) => ca.info.notAfter.getTime() > now.getTime());
    return {
      roots: live.filter((ca) => ca.record.kind === 'root').map((ca) => ca.record.certificate),
      intermediates: live
        .filter((ca) => ca.record.kind === 'intermediate')
        .sort((a, b) => (a.record.id < b.record.id ? -1 : a.record.id > b.record.id ? 1 : 0))
        .map((ca) => ca.record.certificate),
    };
  }

  /** The CA certificate DER of `caId`; not_found naming it otherwise. */
  certificate(caId: string): Buffer {
    const ca = this.#cas.get(caId);
    if (!ca) throw notFound(`no CA "${caId}" in this store`);
    return ca.record.certificate;
  }
}

function samePublicKey(a: CertificateInfo, b: CertificateInfo): boolean {
  return spkiDer(a.publicKey).equals(spkiDer(b.publicKey));
}
