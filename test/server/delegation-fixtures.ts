// Delegates for the server tests: an admin creating direct delegations
// through the real server, delegates sub-delegating offline (as `sigil
// delegate --from` does), and clients that call with a delegate's own chain
// and send its CAs as sigil-chain-bin.
import assert from 'node:assert/strict';
import { type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  CertificateAuthorityClient,
  type DelegationCertificate,
  DelegationClient,
} from '../../src/gen/sigil/v1/sigil.ts';
import {
  issueDelegateLeaf,
  issueDelegation,
  type NameGrants,
  NO_GRANTS,
} from '../../src/pki/delegation-certificates.ts';
import { delegatedId, delegationHost, type Subtree } from '../../src/pki/delegation-names.ts';
import { Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import {
  type Policy,
  type PolicyOid,
  parsePermissions,
  policyExtension,
} from '../../src/pki/policy-extension.ts';
import { possessionFor, signChallenge } from '../../src/protocol/challenges.ts';
import { policyMessage } from '../../src/protocol/policy-messages.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { sha256 } from '../support/fingerprint.ts';
import { pemOf } from '../support/pem.ts';
import { adminIdentity, call } from './helpers.ts';

/** A delegation this test holds: its CA (certificate, key, chain above it) and an identity to call with. */
export interface Held {
  readonly ca: Buffer;
  readonly key: KeyObject;
  /** Above `ca`: issuer first, root excluded. */
  readonly above: readonly Buffer[];
  readonly policy: Policy;
  /** Its subtree (["alice", "carol"]). */
  readonly subtree: Subtree;
  /** The DNS names and IP ranges its name constraints permit. */
  readonly grants: NameGrants;
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
  readonly policyOid: PolicyOid;

  constructor(address: string, dataDir: string, trustDomain: string, policyOid: PolicyOid) {
    this.address = address;
    this.dataDir = dataDir;
    this.trustDomain = trustDomain;
    this.policyOid = policyOid;
    this.trustBundle = readFileSync(join(dataDir, 'ca.pem'), 'utf8');
  }

  /** The SPIFFE ID of a subtree ("alice", "carol" → spiffe://carol.alice.d.<td>), or of a workload in it. */
  id(subtree: Subtree, path = ''): string {
    return delegatedId(this.trustDomain, subtree, path);
  }

  close(): void {
    for (const client of this.#open) client.close();
  }

  credentials(chain: readonly Buffer[], privateKey: KeyObject) {
    return channelCredentials({
      material: new StaticMaterialSource({
        certificateChain: pemOf(...chain),
        privateKey: privateKeyToPem(privateKey),
        trustBundle: this.trustBundle,
      }),
    });
  }

  /**
   * Clients of `address` calling with `chain` (leaf first). sigil's channel
   * credentials send its CAs as sigil-chain-bin with every call; with
   * `sendChain` false the client is plain grpc-js TLS, which presents the same
   * chain in the handshake (so OpenSSL verifies it) but sends nothing else.
   */
  clientsFor(chain: readonly Buffer[], privateKey: KeyObject, sendChain = true) {
    const pem = pemOf(...chain);
    const creds = sendChain
      ? this.credentials(chain, privateKey)
      : grpc.credentials.createSsl(
          Buffer.from(this.trustBundle),
          Buffer.from(privateKeyToPem(privateKey)),
          Buffer.from(pem),
        );
    const delegation = new DelegationClient(this.address, creds);
    const ca = new CertificateAuthorityClient(this.address, creds);
    this.#open.push(delegation, ca);
    return { delegation, ca };
  }

  /** The identity leaf of a held delegation, and clients calling with it. */
  as(held: Held, sendChain = true) {
    const keys = generateKeyPair('p256');
    const leaf = issueDelegateLeaf({
      parent: { issuer: Issuer.fromCertificate(held.ca, held.key), certificateDer: held.ca },
      trustDomain: this.trustDomain,
      policyOid: this.policyOid,
      publicKey: keys.publicKey,
    });
    return this.clientsFor([leaf.der, held.ca, ...held.above], keys.privateKey, sendChain);
  }

  /** Offline sub-delegation by `parent`, as `sigil delegate --from` does it. */
  subDelegate(
    parent: Held,
    name: string,
    p: Policy,
    extra: { pathLen?: number; grants?: Partial<NameGrants> } = {},
  ): Held {
    const keys = generateKeyPair('p256');
    const issued = issueDelegation({
      parent: {
        issuer: Issuer.fromCertificate(parent.ca, parent.key),
        certificateDer: parent.ca,
        policy: parent.policy,
        grants: parent.grants,
      },
      trustDomain: this.trustDomain,
      policyOid: this.policyOid,
      publicKey: keys.publicKey,
      name,
      policy: p,
      ...extra,
    });
    return {
      ca: issued.der,
      key: keys.privateKey,
      above: [parent.ca, ...parent.above],
      policy: p,
      subtree: issued.subtree,
      grants: issued.grants,
    };
  }

  /**
   * A CA certificate signed directly with `parent`'s key, past every check
   * issueDelegation makes: named `spiffeId`, constrained to the host of
   * `subtree`, carrying `p` under the deployment's OID. For refusal tests.
   */
  forge(parent: Held, subtree: Subtree, spiffeId: string, p: Policy, pathLen?: number): Held {
    const keys = generateKeyPair('p256');
    const host = delegationHost(this.trustDomain, subtree);
    const forged = Issuer.fromCertificate(parent.ca, parent.key).issue({
      publicKey: keys.publicKey,
      profile: 'intermediate',
      subject: { commonName: `forged ${subtree.join('/')}` },
      sans: [{ type: 'uri', value: spiffeId }],
      nameConstraints: { permittedUri: [host, `.${host}`], permittedDns: ['invalid'] },
      extensions: [policyExtension(p, this.policyOid)],
      ...(pathLen === undefined ? {} : { pathLen }),
    });
    return {
      ca: forged.der,
      key: keys.privateKey,
      above: [parent.ca, ...parent.above],
      policy: p,
      subtree,
      grants: NO_GRANTS,
    };
  }

  async adminDelegates(
    name: string,
    p: Policy,
    command = false,
    pathLen = -1,
    grants: Partial<NameGrants> = NO_GRANTS,
  ): Promise<Held> {
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
      dnsNames: [...(grants.dnsNames ?? [])],
      ipRanges: [...(grants.ipRanges ?? [])],
      possession: possessionFor(keys.privateKey, signChallenge(sha256(adminDer))),
      command,
    });
    const issued = created.certificate;
    assert.ok(issued);
    assert.equal(created.spiffeId, this.id([name]));
    assert.equal(created.policyOid, this.policyOid.text);
    return {
      ca: issued.certificate,
      key: keys.privateKey,
      above: issued.chain,
      policy: p,
      subtree: [name],
      grants: { dnsNames: created.dnsNames, ipRanges: created.ipRanges },
    };
  }
}
