// Certificates as one PEM text, in the order given (a leaf, then its chain):
// what certificate files and TLS material hold.
import { encodePem } from '../../src/pki/pem.ts';

export function pemOf(...ders: readonly Buffer[]): string {
  return ders.map((der) => encodePem('CERTIFICATE', der)).join('');
}
