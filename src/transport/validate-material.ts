// The gate every TlsMaterial passes before it is used: the chain and bundle
// parse, the key matches the leaf, the leaf is within its validity, and each
// CRL parses, is signed by a CA we know and has not passed its nextUpdate
// (an expired CRL would make OpenSSL reject every handshake). This is a
// consistency check of our own inputs, not path validation: OpenSSL still
// validates every chain it is shown during the handshake.

import { preconditionFailed } from '../errors.ts';
import { type CertificateInfo, parseCertificate, readCertificates } from '../pki/certificate.ts';
import { type CrlInfo, parseCrl, verifyCrlSignature } from '../pki/crl.ts';
import { keysMatch, readPrivateKey } from '../pki/keys.ts';
import type { TlsMaterial } from '../pki/material.ts';

export interface ValidatedMaterial {
  readonly material: TlsMaterial;
  readonly leaf: CertificateInfo;
  readonly chain: readonly CertificateInfo[];
  readonly trusted: readonly CertificateInfo[];
  readonly crls: readonly CrlInfo[];
}

// Structure does not change with time, so each TlsMaterial object is checked
// once (a rotation used to validate the same material in the provider and
// again in the server); only the clock-dependent checks run on every call.
const checkedStructure = new WeakMap<TlsMaterial, ValidatedMaterial>();

export function validateMaterial(material: TlsMaterial, now: Date = new Date()): ValidatedMaterial {
  let validated = checkedStructure.get(material);
  if (!validated) {
    validated = checkStructure(material);
    checkedStructure.set(material, validated);
  }
  checkTimes(validated, now);
  return validated;
}

function checkStructure(material: TlsMaterial): ValidatedMaterial {
  const chain = readCertificates(material.certificateChain, 'certificate chain').map((der) =>
    parseCertificate(der, 'certificate chain'),
  );
  const leaf = chain[0];
  const key = readPrivateKey(material.privateKey, { source: 'private key' });
  if (!keysMatch(key, leaf.publicKey)) {
    throw preconditionFailed(`the private key does not match the certificate "${leaf.subject}"`);
  }
  const trusted = readCertificates(material.trustBundle, 'trust bundle').map((der) =>
    parseCertificate(der, 'trust bundle'),
  );
  const authorities = [...trusted, ...chain.slice(1)];
  const crls = (material.crls ?? []).map((pem, index) => {
    const crl = parseCrl(pem, `CRL #${index + 1}`);
    const signer = authorities.find((ca) => ca.subject === crl.issuer && verifyCrlSignature(crl.der, ca.der));
    if (!signer)
      throw preconditionFailed(`CRL #${index + 1} is not signed by any CA in the chain or trust bundle`);
    return crl;
  });
  return { material, leaf, chain, trusted, crls };
}

function checkTimes(validated: ValidatedMaterial, now: Date): void {
  const { leaf, crls } = validated;
  if (now.getTime() > leaf.notAfter.getTime()) {
    throw preconditionFailed(`certificate "${leaf.subject}" expired at ${leaf.notAfter.toISOString()}`);
  }
  crls.forEach((crl, index) => {
    if (crl.nextUpdate && crl.nextUpdate.getTime() <= now.getTime()) {
      throw preconditionFailed(
        `CRL #${index + 1} from "${crl.issuer}" expired at ${crl.nextUpdate.toISOString()} (its nextUpdate has passed)`,
      );
    }
  });
}
