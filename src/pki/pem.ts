// PEM (RFC 7468) encoding and decoding. Decoding is strict about the parts
// that carry meaning (matching labels, terminated blocks, canonical base64)
// and lenient about the rest: text between blocks is ignored, as RFC 7468
// allows, and line endings may be LF or CRLF.

import { invalid } from '../errors.ts';

export interface PemBlock {
  label: string;
  der: Buffer;
  /**
   * RFC 1421 headers (e.g. `Proc-Type`, `DEK-Info` of legacy OpenSSL encrypted
   * keys), in file order; absent when the block has none. When present, `der`
   * is the raw (possibly encrypted) body.
   */
  headers?: Readonly<Record<string, string>>;
}

const BEGIN = /^-----BEGIN (.*)-----$/;
const END = /^-----END (.*)-----$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
// Printable ASCII, single inner spaces, no hyphen at either end (it would merge with the dashes).
const LABEL = /^[\x21-\x2c\x2e-\x7e](?:[\x21-\x7e]| (?! ))*(?<![- ])$/;

const q = (label: string): string => JSON.stringify(label);

/** One PEM block: base64 body in 64-character lines, ending with a newline. */
export function encodePem(label: string, der: Buffer): string {
  if (!LABEL.test(label)) throw invalid(`invalid PEM label ${q(label)}`);
  if (der.length === 0) throw invalid(`refusing to encode an empty PEM block ${q(label)}`);
  const body = der.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < body.length; i += 64) lines.push(body.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}${lines.length > 0 ? '\n' : ''}-----END ${label}-----\n`;
}

/**
 * Every PEM block in `text`, in order. Returns [] when there are none so callers
 * can say what they expected to find; a block that is present but broken is an
 * error, because silently skipping it would hide a damaged file.
 */
export function decodePem(text: string): PemBlock[] {
  const lines = text.split(/\r?\n/);
  const blocks: PemBlock[] = [];
  let i = 0;
  while (i < lines.length) {
    const begin = BEGIN.exec(lines[i].trim());
    i++;
    if (!begin) continue;
    const label = begin[1];
    const headers: Record<string, string> = {};
    let headerCount = 0;
    let lastHeader: string | undefined;
    const body: string[] = [];
    let terminated = false;
    let inHeaders = true;
    for (; i < lines.length; i++) {
      const raw = lines[i];
      const line = raw.trim();
      const end = END.exec(line);
      if (end) {
        if (end[1] !== label) {
          throw invalid(`PEM block ${q(label)} ends with a mismatched label ${q(end[1])}`);
        }
        terminated = true;
        i++;
        break;
      }
      if (BEGIN.test(line)) {
        throw invalid(`PEM block ${q(label)} is not terminated (found another BEGIN line first)`);
      }
      if (inHeaders) {
        if (lastHeader !== undefined && /^[ \t]/.test(raw) && line !== '') {
          headers[lastHeader] += ` ${line}`; // RFC 1421 continuation line
          continue;
        }
        const colon = line.indexOf(':');
        if (colon > 0) {
          lastHeader = line.slice(0, colon).trim();
          headers[lastHeader] = line.slice(colon + 1).trim();
          headerCount++;
          continue;
        }
        inHeaders = false;
        if (line === '') continue; // blank line separating headers from the body
      }
      body.push(line);
    }
    if (!terminated) throw invalid(`PEM block ${q(label)} is not terminated (no "-----END ${label}-----")`);
    const base64 = body.join('').replace(/[ \t]/g, '');
    if (base64.length === 0) throw invalid(`PEM block ${q(label)} is empty`);
    if (!BASE64.test(base64) || base64.length % 4 !== 0) {
      throw invalid(`PEM block ${q(label)} contains invalid base64`);
    }
    const der = Buffer.from(base64, 'base64');
    // Node ignores non-zero padding bits; insist on the canonical encoding.
    if (der.toString('base64') !== base64) throw invalid(`PEM block ${q(label)} contains invalid base64`);
    blocks.push(headerCount > 0 ? { label, der, headers } : { label, der });
  }
  return blocks;
}

/** True when `data` contains a PEM BEGIN line; used to tell PEM files from DER ones. */
export function looksLikePem(data: Buffer | string): boolean {
  const text = typeof data === 'string' ? data : data.toString('latin1');
  return /(^|\n)[ \t]*-----BEGIN [^\n]*-----/.test(text);
}
