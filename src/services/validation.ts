// Field checks at the edge of the API: sizes and shapes a request must have
// before the authority looks at it. Each refusal is INVALID_ARGUMENT with a
// message that names the field (as in the proto, snake_case). The authority
// still makes every decision; this only keeps oversized or malformed input
// from reaching it, and makes the error say where the problem is.
//
// grpc-js refuses a whole message over MAX_MESSAGE_BYTES with RESOURCE_EXHAUSTED
// before any of this runs.
import { fieldError, firstLineOf, SigilError } from '../errors.ts';
import { derFrame } from '../pki/csr.ts';
import { MAX_CHALLENGE_BYTES, MAX_SIGNATURE_BYTES, MIN_CHALLENGE_BYTES } from '../pki/possession.ts';
import { parseSerial } from '../pki/serial.ts';

/** Largest request message the server reads (grpc.max_receive_message_length). */
export const MAX_MESSAGE_BYTES = 128 * 1024;
export const MAX_SPKI_BYTES = 2 * 1024;
export const MAX_CSR_BYTES = 64 * 1024;
/** dns_names, ip_addresses and uris: at most this many entries each. */
export const MAX_NAMES = 64;
export const MAX_DNS_NAME_LENGTH = 253;
export const MAX_IP_ADDRESS_LENGTH = 64;
export const MAX_URI_LENGTH = 2048;
/** X.509's upper bound for a common name. */
export const MAX_COMMON_NAME_LENGTH = 64;
export const MAX_SHORT_TEXT = 128;
export const MAX_TOKEN_SECRET_BYTES = 64;
export const MAX_PAGE_TOKEN_LENGTH = 1024;
export const MAX_PAGE_SIZE = 1000;

function shown(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
}

export function checkBytes(field: string, value: Buffer | Uint8Array, max: number, min = 0): void {
  if (value.length > max) throw fieldError(field, `${value.length} bytes is over the limit of ${max}`);
  if (value.length < min) {
    throw fieldError(field, min === 1 ? 'is empty' : `${value.length} bytes is under the minimum of ${min}`);
  }
}

export function checkText(
  field: string,
  value: string,
  max: number,
  options: { required?: boolean } = {},
): void {
  if (options.required && value === '') throw fieldError(field, 'is required');
  if (value.length > max) throw fieldError(field, `${value.length} characters is over the limit of ${max}`);
  // Control characters have no business in any of sigil's fields and would garble logs and listings.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: that is the point of this check
  if (/[\u0000-\u001f\u007f]/.test(value)) throw fieldError(field, 'contains control characters');
}

export function checkList(field: string, values: readonly string[], maxEach: number): void {
  if (values.length > MAX_NAMES) {
    throw fieldError(field, `${values.length} entries is over the limit of ${MAX_NAMES}`);
  }
  values.forEach((value, index) => {
    checkText(`${field}[${index}]`, value, maxEach);
    if (value === '') throw fieldError(`${field}[${index}]`, 'is empty');
  });
}

export interface PossessionFields {
  readonly spki: Buffer;
  readonly challenge: Buffer;
  readonly signature: Buffer;
}

/** Why `der` is not shaped like SEQUENCE { SEQUENCE (AlgorithmIdentifier), BIT STRING }, or null. */
function spkiShapeProblem(der: Buffer): string | null {
  const outer = derFrame(der);
  if (der[0] !== 0x30 || !outer || outer.total !== der.length) return 'not one DER SEQUENCE';
  const algorithm = derFrame(der.subarray(outer.header));
  if (der[outer.header] !== 0x30 || !algorithm) return 'no AlgorithmIdentifier';
  const keyAt = outer.header + algorithm.total;
  const key = derFrame(der.subarray(keyAt));
  if (der[keyAt] !== 0x03 || !key || keyAt + key.total !== der.length)
    return 'no subjectPublicKey BIT STRING';
  return null;
}

/**
 * Sizes, and that `spki` is framed like a SubjectPublicKeyInfo. The key itself
 * is parsed once, by the authority (it costs ~50 µs); withPossessionField
 * names the field in what the authority says about it.
 */
export function checkPossession(field: string, possession: PossessionFields | undefined): PossessionFields {
  if (!possession) throw fieldError(field, 'is required');
  checkBytes(`${field}.spki`, possession.spki, MAX_SPKI_BYTES, 1);
  checkBytes(`${field}.challenge`, possession.challenge, MAX_CHALLENGE_BYTES, MIN_CHALLENGE_BYTES);
  checkBytes(`${field}.signature`, possession.signature, MAX_SIGNATURE_BYTES, 1);
  const problem = spkiShapeProblem(Buffer.from(possession.spki));
  if (problem) throw fieldError(`${field}.spki`, `malformed SubjectPublicKeyInfo (${problem})`);
  return possession;
}

// What pki/keys.ts says about an SPKI it cannot use.
const SPKI_PROBLEM = /^(malformed SubjectPublicKeyInfo|unsupported key)/;

/** Runs `work`; an SPKI refusal from below comes back naming `${field}.spki`. */
export async function withPossessionField<T>(field: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (
      error instanceof SigilError &&
      error.code === 'invalid_argument' &&
      SPKI_PROBLEM.test(error.message)
    ) {
      throw new SigilError('invalid_argument', `${field}.spki: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

/** A certificate serial: lower-case or upper-case hex, optionally with colons; returned canonical. */
export function checkSerial(field: string, value: string): string {
  checkText(field, value, 128, { required: true });
  try {
    return parseSerial(value);
  } catch (error) {
    throw fieldError(field, firstLineOf(error));
  }
}

export function checkPageSize(field: string, value: number): number | undefined {
  if (value === 0) return undefined;
  if (value > MAX_PAGE_SIZE) throw fieldError(field, `${value} is over the limit of ${MAX_PAGE_SIZE}`);
  return value;
}

/** "", "yes" or "no" → undefined, true, false. */
export function checkTriState(field: string, value: string): boolean | undefined {
  if (value === '') return undefined;
  if (value === 'yes') return true;
  if (value === 'no') return false;
  throw fieldError(field, `${shown(value)} must be "", "yes" or "no"`);
}
