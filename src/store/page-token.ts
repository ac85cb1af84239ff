// Opaque page tokens for listCertificates. Pages are keyset pages in
// (issued_at, serial) order, so a token is the position of the last item of
// the previous page: base64url of "<issued_at unix ms>.<serial>". Callers must
// treat it as opaque; anything that does not decode to exactly that shape is
// refused as invalid input (it never reaches SQL).
import { invalid } from '../errors.ts';

export interface PagePosition {
  readonly issuedAtMs: number;
  readonly serial: string;
}

const SHAPE = /^(0|[1-9][0-9]{0,15})\.([0-9a-f]{1,128})$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

export function encodePageToken(position: PagePosition): string {
  return Buffer.from(`${position.issuedAtMs}.${position.serial}`, 'utf8').toString('base64url');
}

export function decodePageToken(token: string): PagePosition {
  const malformed = () => invalid('malformed page token (pass nextPageToken from a previous page unchanged)');
  if (token.length > 200 || !BASE64URL.test(token)) throw malformed();
  const match = SHAPE.exec(Buffer.from(token, 'base64url').toString('utf8'));
  if (!match) throw malformed();
  const issuedAtMs = Number(match[1]);
  const position = { issuedAtMs, serial: match[2] };
  // base64url decoding ignores stray trailing bits; only the canonical spelling is a token.
  if (!Number.isSafeInteger(issuedAtMs) || encodePageToken(position) !== token) throw malformed();
  return position;
}
