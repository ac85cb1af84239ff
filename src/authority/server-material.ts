// The replica's own gRPC server identity: a leaf from this replica's
// intermediate with the addresses clients dial as DNS/IP SANs plus
// spiffe://<td>/replica/<id>, and the roots as the trust bundle. The key is
// generated in memory and never stored. It is exposed as a MaterialSource so
// transport rotates it into the listening server without a restart.
import type { KeyObject } from 'node:crypto';
import { invalid } from '../errors.ts';
import { generateKeyPair, privateKeyToPem } from '../pki/keys.ts';
import type { MaterialSource, TlsMaterial } from '../pki/material.ts';
import { classifyAddress, type GeneralName, uriName } from '../pki/names.ts';
import { encodePem } from '../pki/pem.ts';
import { issuedEvent } from './audit.ts';
import type { AuthorityContext } from './context.ts';
import { replicaSpiffeId } from './identities.ts';
import { issueLeaf } from './issuance.ts';

/** The host part of "host:port", "[v6]:port" or a bare host. */
export function hostOf(address: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(address);
  if (bracketed) return bracketed[1];
  const colons = address.split(':').length - 1;
  if (colons === 1) return address.slice(0, address.indexOf(':'));
  return address; // a bare host, or a bare IPv6 address
}

/** DNS/IP SANs for a list of server addresses, deduplicated, plus the replica's SPIFFE ID. */
export function serverNames(addresses: readonly string[], replicaSpiffeId: string): GeneralName[] {
  if (addresses.length === 0) throw invalid('a replica needs at least one server address (host:port)');
  const names: GeneralName[] = [];
  const seen = new Set<string>();
  for (const address of addresses) {
    const name = classifyAddress(hostOf(address.trim()));
    const key = `${name.type}:${name.value}`;
    if (!seen.has(key)) {
      seen.add(key);
      names.push(name);
    }
  }
  names.push(uriName(replicaSpiffeId));
  return names;
}

/** A fresh P-256 key pair for the server leaf; it lives only in memory. */
export function newServerKey(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPair('p256');
}

export function serverMaterialOf(
  leafDer: Buffer,
  chain: readonly Buffer[],
  key: KeyObject,
  roots: readonly Buffer[],
): TlsMaterial {
  return {
    certificateChain: [leafDer, ...chain].map((der) => encodePem('CERTIFICATE', der)).join(''),
    privateKey: privateKeyToPem(key),
    trustBundle: roots.map((der) => encodePem('CERTIFICATE', der)).join(''),
  };
}

/** What maintenance needs to know of the server leaf in use: when it is due, and whether its issuer still signs. */
export interface ServerLeaf {
  readonly serial: string;
  readonly issuerId: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** A new server leaf from this replica's current intermediate, and the TLS material around it. */
export async function issueServerMaterial(
  context: AuthorityContext,
): Promise<{ material: TlsMaterial; leaf: ServerLeaf }> {
  const now = context.now();
  const signer = context.leafSigner(now);
  const { privateKey, publicKey } = newServerKey();
  const replicaId = replicaSpiffeId(context.trustDomain, context.replicaId);
  const { view } = await issueLeaf(context.store, signer, {
    publicKey,
    pkiProfile: 'server+client',
    recordProfile: 'server',
    commonName: `sigil replica ${context.replicaId}`,
    sans: serverNames(context.serverAddresses, replicaId),
    ttlMs: context.serverTtlMs,
    requester: replicaId,
    now,
  });
  context.audit(issuedEvent(view, replicaId, 'server', 'server'));
  const { notBefore, notAfter } = view;
  return {
    material: serverMaterialOf(view.certificate, view.chain, privateKey, context.cas.bundle(now).roots),
    leaf: { serial: view.serial, issuerId: signer.issuerId, notBefore, notAfter },
  };
}

/** Current material plus subscribers; `set` announces a replacement. */
export class ServerMaterialSource implements MaterialSource {
  #current: TlsMaterial;
  readonly #listeners = new Set<(material: TlsMaterial) => void>();
  readonly #onListenerError: (error: unknown) => void;

  constructor(initial: TlsMaterial, onListenerError: (error: unknown) => void) {
    this.#current = initial;
    this.#onListenerError = onListenerError;
  }

  current(): TlsMaterial {
    return this.#current;
  }

  subscribe(listener: (material: TlsMaterial) => void): () => void {
    const entry = (material: TlsMaterial) => listener(material);
    this.#listeners.add(entry);
    return () => {
      this.#listeners.delete(entry);
    };
  }

  set(material: TlsMaterial): void {
    this.#current = material;
    for (const listener of [...this.#listeners]) {
      try {
        listener(material);
      } catch (error) {
        this.#onListenerError(error);
      }
    }
  }
}
