// Custody of the root key: exported (and taken offline) so that it need not
// sit in the store, and imported again when intermediates must be rotated or
// replicas admitted. Every step runs exclusively with CA reloads and
// maintenance.
import type { KeyObject } from 'node:crypto';
import { preconditionFailed } from '../errors.ts';
import { keysMatch, privateKeyToPem, readPrivateKey } from '../pki/keys.ts';
import { encodePem } from '../pki/pem.ts';
import { requireAdmin } from './access.ts';
import { type LoadedCa, ROOT_CA_ID } from './ca-set.ts';
import type { AuthorityContext } from './context.ts';
import type { Caller } from './identities.ts';
import { encryptCaKey } from './key-encryption.ts';

export interface ExportedRoot {
  readonly certificatePem: string;
  /** PKCS#8 PEM, encrypted when a passphrase was given. */
  readonly privateKeyPem: string;
  readonly rootFingerprint: string;
}

/**
 * The root certificate and key as PEM (the key encrypted when a passphrase
 * is given). Unless `keepInStore`, the encrypted root key is then removed
 * from the store: this replica keeps issuing with its intermediate but can
 * no longer admit replicas or rotate intermediates. A root CRL valid until
 * the root expires is published first, since no new one can be signed
 * while the key is away. Write the key out before calling with removal, or
 * call twice: keepInStore first, then removeRootKey.
 */
export async function exportRoot(
  context: AuthorityContext,
  caller: Caller,
  options: { passphrase?: string; keepInStore?: boolean },
): Promise<ExportedRoot> {
  requireAdmin(context, caller, 'export the root key');
  return context.exclusive(async () => {
    const root = context.cas.requireRoot();
    const key = rootKeyHere(context, root);
    await context.crls.publishRoot({ offline: !options.keepInStore });
    const exported: ExportedRoot = {
      certificatePem: encodePem('CERTIFICATE', root.record.certificate),
      privateKeyPem: privateKeyToPem(key, options.passphrase),
      rootFingerprint: root.info.fingerprint,
    };
    if (!options.keepInStore) await dropRootKey(context, root);
    return exported;
  });
}

/** Removes the encrypted root key from the store (after exportRoot with keepInStore). */
export async function removeRootKey(context: AuthorityContext, caller: Caller): Promise<void> {
  requireAdmin(context, caller, 'take the root key offline');
  await context.exclusive(async () => {
    const root = context.cas.requireRoot();
    rootKeyHere(context, root);
    await context.crls.publishRoot({ offline: true });
    await dropRootKey(context, root);
  });
}

/** Brings an exported root key back online on this replica. */
export async function importRoot(
  context: AuthorityContext,
  caller: Caller,
  options: { privateKeyPem: string; passphrase?: string },
): Promise<void> {
  requireAdmin(context, caller, 'import the root key');
  await context.exclusive(async () => {
    const root = context.cas.requireRoot();
    const key = readPrivateKey(options.privateKeyPem, { passphrase: options.passphrase, source: 'root key' });
    if (!keysMatch(key, root.info.publicKey)) {
      throw preconditionFailed("this key does not belong to this store's root CA");
    }
    if (context.cas.rootKey()) return;
    if (root.record.encryptedKey)
      throw preconditionFailed('the root key is already online on another replica');
    await context.store.putCa({
      ...root.record,
      encryptedKey: encryptCaKey(key, context.storeKey, ROOT_CA_ID),
    });
    await context.reload();
  });
}

function rootKeyHere(context: AuthorityContext, root: LoadedCa): KeyObject {
  const key = context.cas.rootKey();
  if (!key) {
    throw preconditionFailed(
      root.record.encryptedKey
        ? `the root key is held by another replica, not by "${context.replicaId}"`
        : 'the root key is already offline (exported)',
    );
  }
  return key;
}

async function dropRootKey(context: AuthorityContext, root: LoadedCa): Promise<void> {
  await context.store.putCa({ ...root.record, encryptedKey: null });
  await context.reload();
}
