// The client's CA certificates, sent again as call metadata. OpenSSL on the
// server verifies the chain the client presents in the handshake, but Node
// (24.x, nodejs/node#65579) then hides the presented intermediates from the
// application, which needs them to read delegation policies. So a client whose
// chain carries intermediates also sends them as `sigil-chain-bin`, one DER
// certificate per value, the leaf's issuer first. The server trusts nothing
// in them by itself: authority/presented-chain.ts links them to the verified
// leaf and to the server's own CAs by signature.
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { invalid } from '../errors.ts';
import { decodePem } from '../pki/pem.ts';
import { X509Certificate as LibraryCertificate } from '../pki/x509-library.ts';

export const CHAIN_METADATA_KEY = 'sigil-chain-bin';

/** More than this many certificates (a 10-link chain has 9 above the leaf) is refused unread. */
export const MAX_PRESENTED_CERTIFICATES = 9;
/** Certificates larger than this are refused unread. */
export const MAX_PRESENTED_CERTIFICATE_BYTES = 16 * 1024;

/** The certificates after the leaf in a PEM chain, self-signed roots left out (the server has those). */
export function presentedIntermediates(certificateChainPem: string): Buffer[] {
  const blocks = decodePem(certificateChainPem).filter((block) => block.label === 'CERTIFICATE');
  return blocks
    .slice(1)
    .map((block) => block.der)
    .filter((der) => !isSelfIssued(der));
}

function isSelfIssued(der: Buffer): boolean {
  try {
    const certificate = new X509Certificate(der);
    return certificate.checkIssued(certificate);
  } catch {
    return false;
  }
}

const NAME_CONSTRAINTS = '2.5.29.30';

/**
 * The CA certificates a delegate must present: the intermediates of a PEM
 * chain when one of them is a delegation (it carries name constraints, as
 * every delegation does), else none — a deployment identity needs no proof
 * beyond its handshake, so its calls carry nothing extra.
 */
export function delegationChainToPresent(certificateChainPem: string): Buffer[] {
  const intermediates = presentedIntermediates(certificateChainPem);
  const constrained = intermediates.some((der) => {
    try {
      return new LibraryCertificate(der).getExtension(NAME_CONSTRAINTS) !== null;
    } catch {
      return false;
    }
  });
  return constrained ? intermediates : [];
}

/**
 * Call credentials adding `sigil-chain-bin` with `chain()` (read per call)
 * when it is not empty.
 */
export function chainCallCredentials(chain: () => readonly Buffer[]): grpc.CallCredentials {
  return grpc.CallCredentials.createFromMetadataGenerator((_options, callback) => {
    const metadata = new grpc.Metadata();
    for (const der of chain()) metadata.add(CHAIN_METADATA_KEY, der);
    callback(null, metadata);
  });
}

/**
 * A client interceptor adding `sigil-chain-bin` to every call; null when the
 * chain has no intermediates to send.
 */
export function chainMetadataInterceptor(certificateChainPem: string): grpc.Interceptor | null {
  const intermediates = presentedIntermediates(certificateChainPem);
  if (intermediates.length === 0) return null;
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        for (const der of intermediates) metadata.add(CHAIN_METADATA_KEY, der);
        next(metadata, listener);
      },
    });
}

/** The certificates a call carried in `sigil-chain-bin` (bounded; invalid() past the bounds). */
export function readPresentedChain(metadata: grpc.Metadata): Buffer[] {
  const values = metadata.get(CHAIN_METADATA_KEY);
  if (values.length > MAX_PRESENTED_CERTIFICATES) {
    throw invalid(
      `${CHAIN_METADATA_KEY} carries ${values.length} certificates; a chain of at most ${MAX_PRESENTED_CERTIFICATES + 1} is accepted`,
    );
  }
  return values.map((value, index) => {
    if (!Buffer.isBuffer(value)) throw invalid(`${CHAIN_METADATA_KEY} #${index} is not binary`);
    if (value.length > MAX_PRESENTED_CERTIFICATE_BYTES) {
      throw invalid(`${CHAIN_METADATA_KEY} #${index} is over ${MAX_PRESENTED_CERTIFICATE_BYTES} bytes`);
    }
    return value;
  });
}
