// Delegates for the server tests: an admin creating direct delegations
// through the real server, delegates sub-delegating offline (as `sigil
// delegate --from` does), and clients that call with a delegate's own chain
// and send its CAs as sigil-chain-bin.
import assert from 'node:assert/strict';
import { createHash, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { possessionFor, signChallenge } from '../../src/authority/challenges.ts';
import { issueDelegateLeaf, issueDelegation } from '../../src/authority/delegation.ts';
import {
  CertificateAuthorityClient,
  type DelegationCertificate,
  DelegationClient,
} from '../../src/gen/sigil/v1/sigil.ts';
import { Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { type Policy, parsePermissions } from '../../src/pki/policy-extension.ts';
import { policyMessage } from '../../src/services/policy-messages.ts';
import { chainMetadataInterceptor } from '../../src/transport/chain-metadata.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { adminIdentity, call } from './helpers.ts';

const sha256 = (der: Buffer): string => createHash('sha256').update(der).digest('hex');

/** A delegation this test holds: its CA (certificate, key, chain above it) and an identity to call with. */
export interface Held {
  readonly ca: Buffer;
  readonly key: KeyObject;
  /** Above `ca`: issuer first, root excluded. */
  readonly above: readonly Buffer[];
  readonly policy: Policy;
}

export function policy(permissions: string, limits: Partial<NonNullable<Policy['limits']>> | null): Policy {
  return {
    version: 1,
    permissions: parsePermissions(permissions),
    limits:
      limits === null
        ? null
        : {
            workloads: 0,
            cpus: [],
            memoryMiB: 0,
            blockMiB: 0,
            bridges: [],
            issuancePerHour: 100,
            ...limits,
          },
  };
}

/** Delegation helpers bound to one server (`address`), its data directory (admin identity) and trust bundle. */
export class Delegates {
  readonly #open: grpc.Client[] = [];
  readonly trustBundle: string;

  readonly address: string;
  readonly dataDir: string;
  readonly trustDomain: string;

  constructor(address: string, dataDir: string, trustDomain: string) {
    this.address = address;
    this.dataDir = dataDir;
    this.trustDomain = trustDomain;
    this.trustBundle = readFileSync(join(dataDir, 'ca.pem'), 'utf8');
  }

  close(): void {
    for (const client of this.#open) client.close();
  }

  credentials(chain: readonly Buffer[], privateKey: KeyObject) {
    return channelCredentials({
      material: new StaticMaterialSource({
        certificateChain: chain.map((der) => encodePem('CERTIFICATE', der)).join(''),
        privateKey: privateKeyToPem(privateKey),
        trustBundle: this.trustBundle,
      }),
    });
  }

  /** Clients of `address` calling with `chain` (leaf first), sending its CAs as sigil-chain-bin unless told not to. */
  clientsFor(chain: readonly Buffer[], privateKey: KeyObject, sendChain = true) {
    const pem = chain.map((der) => encodePem('CERTIFICATE', der)).join('');
    const interceptor = sendChain ? chainMetadataInterceptor(pem) : null;
    const options = interceptor ? { interceptors: [interceptor] } : {};
    const creds = this.credentials(chain, privateKey);
    const delegation = new DelegationClient(this.address, creds, options);
    const ca = new CertificateAuthorityClient(this.address, creds, options);
    this.#open.push(delegation, ca);
    return { delegation, ca };
  }

  /** The identity leaf of a held delegation, and clients calling with it. */
  as(held: Held, sendChain = true) {
    const keys = generateKeyPair('p256');
    const leaf = issueDelegateLeaf({
      parent: { issuer: Issuer.fromCertificate(held.ca, held.key), certificateDer: held.ca },
      trustDomain: this.trustDomain,
      publicKey: keys.publicKey,
    });
    return this.clientsFor([leaf.der, held.ca, ...held.above], keys.privateKey, sendChain);
  }

  /** Offline sub-delegation by `parent`, as `sigil delegate --from` does it. */
  subDelegate(parent: Held, name: string, p: Policy, extra: { pathLen?: number } = {}): Held {
    const keys = generateKeyPair('p256');
    const issued = issueDelegation({
      parent: {
        issuer: Issuer.fromCertificate(parent.ca, parent.key),
        certificateDer: parent.ca,
        policy: parent.policy,
      },
      trustDomain: this.trustDomain,
      publicKey: keys.publicKey,
      name,
      policy: p,
      ...extra,
    });
    return { ca: issued.der, key: keys.privateKey, above: [parent.ca, ...parent.above], policy: p };
  }

  async adminDelegates(name: string, p: Policy, command = false, pathLen = -1): Promise<Held> {
    const admin = adminIdentity(this.dataDir);
    const adminDer = new X509Certificate(admin.certificateChain).raw;
    const client = new DelegationClient(
      this.address,
      channelCredentials({
        material: new StaticMaterialSource({ ...admin, trustBundle: this.trustBundle }),
      }),
    );
    this.#open.push(client);
    const keys = generateKeyPair('p256');
    const created: DelegationCertificate = await call(client, client.createDelegation, {
      name,
      policy: policyMessage(p),
      pathLen,
      ttlSeconds: 0,
      dnsNames: [],
      possession: possessionFor(keys.privateKey, signChallenge(sha256(adminDer))),
      command,
    });
    const issued = created.certificate;
    assert.ok(issued);
    return { ca: issued.certificate, key: keys.privateKey, above: issued.chain, policy: p };
  }
}
