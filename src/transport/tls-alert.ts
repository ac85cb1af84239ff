// Telling a refused TLS 1.3 client why: the alert OpenSSL would have sent.
//
// Node never lets OpenSSL refuse a client certificate in the handshake: its
// verify callback always returns 1 ("Always allow a connection. We'll reject
// in javascript", src/crypto/crypto_tls.cc) and rejectUnauthorized only
// destroys the socket afterwards, so a refused client sees its connection
// drop ("socket hang up", grpc-js "Failed to connect") and never learns why.
// Node has no call that sends an alert either.
//
// In TLS 1.3 the client's certificate arrives after the server's Finished, so
// the alert OpenSSL itself would send is an encrypted record under the
// server's application traffic secret with sequence number 0: nothing has
// been sent under that secret when 'secureConnection' runs (OpenSSL writes
// its NewSessionTickets after the callback returns). So a server that wants
// to say why:
//   - learns SERVER_TRAFFIC_SECRET_0 of each connection from Node's 'keylog'
//     event and keeps it only until its decision at 'secureConnection'
//     (synchronously; forget() drops it for an admitted connection);
//   - for a refusal, seals the one record of RFC 8446 §5.2 (TLSInnerPlaintext
//     = level fatal, the description, content type alert) with the key and IV
//     of §7.3 (HKDF-Expand-Label of the secret), writes it to the TCP socket
//     beneath the TLS layer, and closes the connection.
// The record is written only when the write completes at once (an empty send
// buffer, as on a fresh connection); the connection is closed in every case.
// Had any of this stopped holding (another Node, a new OpenSSL), the client
// would see "decryption failed or bad record mac" instead of the reason: the
// connection is refused all the same, and test/transport/handshake-
// diagnostics.test.ts fails.
//
// The secret never leaves this module and is never logged; it only decrypts
// what this server sends on that connection, and the server holds the private
// key that protects all of them anyway.
import { type CipherGCMTypes, createCipheriv, createHmac } from 'node:crypto';
import type { Socket } from 'node:net';
import type tls from 'node:tls';

/** The TLS alerts a refused client can be sent (RFC 8446 §6). */
export const TLS_ALERTS = {
  bad_certificate: 42,
  unsupported_certificate: 43,
  certificate_revoked: 44,
  certificate_expired: 45,
  certificate_unknown: 46,
  unknown_ca: 48,
  access_denied: 49,
  internal_error: 80,
  certificate_required: 116,
} as const;

export type TlsAlert = keyof typeof TLS_ALERTS;

const CONTENT_TYPE_ALERT = 21;
const CONTENT_TYPE_APPLICATION_DATA = 23;
const LEVEL_FATAL = 2;
const TAG_LENGTH = 16;

interface Suite {
  readonly cipher: 'aes-128-gcm' | 'aes-256-gcm' | 'chacha20-poly1305';
  readonly hash: 'sha256' | 'sha384';
  readonly keyLength: number;
}

// The AEAD suites Node enables by default for TLS 1.3 (CCM suites are off).
const SUITES: Readonly<Record<string, Suite>> = {
  TLS_AES_128_GCM_SHA256: { cipher: 'aes-128-gcm', hash: 'sha256', keyLength: 16 },
  TLS_AES_256_GCM_SHA384: { cipher: 'aes-256-gcm', hash: 'sha384', keyLength: 32 },
  TLS_CHACHA20_POLY1305_SHA256: { cipher: 'chacha20-poly1305', hash: 'sha256', keyLength: 32 },
};

/** HKDF-Expand-Label(secret, label, "", length) of RFC 8446 §7.1; one HMAC block suffices here. */
function expandLabel(secret: Buffer, label: string, length: number, hash: Suite['hash']): Buffer {
  const fullLabel = Buffer.from(`tls13 ${label}`, 'latin1');
  const info = Buffer.concat([
    Buffer.from([length >> 8, length & 0xff, fullLabel.length]),
    fullLabel,
    Buffer.from([0]), // empty context
    Buffer.from([1]), // T(1) counter
  ]);
  return createHmac(hash, secret).update(info).digest().subarray(0, length);
}

/**
 * The TLS 1.3 record carrying a fatal `alert`, sealed for `sequence` under
 * an application traffic secret of `cipherSuite`; null for a suite it does not know.
 */
export function sealAlertRecord(
  secret: Buffer,
  cipherSuite: string,
  alert: TlsAlert,
  sequence = 0n,
): Buffer | null {
  const suite = SUITES[cipherSuite];
  if (!suite) return null;
  const key = expandLabel(secret, 'key', suite.keyLength, suite.hash);
  const nonce = expandLabel(secret, 'iv', 12, suite.hash);
  for (let i = 0; i < 8; i++) nonce[11 - i] ^= Number((sequence >> BigInt(8 * i)) & 0xffn);
  const inner = Buffer.from([LEVEL_FATAL, TLS_ALERTS[alert], CONTENT_TYPE_ALERT]);
  const length = inner.length + TAG_LENGTH;
  // TLSCiphertext header: opaque_type application_data, legacy_record_version 0x0303, length.
  const header = Buffer.from([CONTENT_TYPE_APPLICATION_DATA, 3, 3, length >> 8, length & 0xff]);
  // chacha20-poly1305 takes the same options as the GCM ciphers (Node types them apart).
  const cipher = createCipheriv(suite.cipher as CipherGCMTypes, key, nonce, { authTagLength: TAG_LENGTH });
  cipher.setAAD(header, { plaintextLength: inner.length });
  return Buffer.concat([header, cipher.update(inner), cipher.final(), cipher.getAuthTag()]);
}

const addressKey = (socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }) =>
  `${socket.remoteAddress}|${socket.remotePort}`;

/** Alerts for the refused clients of one node:tls server (see the top of this file). */
export class ServerAlerts {
  // SERVER_TRAFFIC_SECRET_0 of connections not yet decided on.
  readonly #secrets = new WeakMap<tls.TLSSocket, Buffer>();
  // The TCP socket beneath each TLS socket, by remote address and port (one per open connection).
  readonly #raw = new Map<string, Socket>();

  constructor(server: tls.Server) {
    server.on('connection', (socket: Socket) => {
      const key = addressKey(socket);
      this.#raw.set(key, socket);
      socket.once('close', () => {
        if (this.#raw.get(key) === socket) this.#raw.delete(key);
      });
    });
    server.on('keylog', (line: Buffer, socket: tls.TLSSocket) => {
      // "SERVER_TRAFFIC_SECRET_0 <client random hex> <secret hex>\n"; every other line is ignored.
      if (!line.subarray(0, 24).equals(SERVER_TRAFFIC_SECRET_0)) return;
      const secret = line.toString('latin1').trim().split(' ')[2];
      if (!secret) return;
      this.#secrets.set(socket, Buffer.from(secret, 'hex'));
      // A handshake that fails after this line never reaches a decision: forget it then.
      socket.once('close', () => this.forget(socket));
    });
  }

  /** The connection was admitted: its secret is no longer kept. */
  forget(socket: tls.TLSSocket): void {
    this.#secrets.get(socket)?.fill(0);
    this.#secrets.delete(socket);
  }

  /**
   * Send `alert` on a connection that has just completed its handshake and
   * must be refused. Returns whether the record went out; the caller
   * destroys the socket either way.
   */
  send(socket: tls.TLSSocket, alert: TlsAlert): boolean {
    const secret = this.#secrets.get(socket);
    this.#secrets.delete(socket);
    if (!secret) return false;
    const raw = this.#raw.get(addressKey(socket));
    const suite = socket.getProtocol() === 'TLSv1.3' ? socket.getCipher()?.standardName : undefined;
    const record = suite === undefined ? null : sealAlertRecord(secret, suite, alert);
    secret.fill(0);
    if (!raw || raw.destroyed) return false;
    // Only onto an empty send buffer: a write that had to wait would be
    // reported to the TLS layer above it, not here, and end up behind its records.
    if (record === null || raw.writableLength > 0) return false;
    raw.write(record);
    return raw.writableLength === 0;
  }
}

const SERVER_TRAFFIC_SECRET_0 = Buffer.from('SERVER_TRAFFIC_SECRET_0 ', 'latin1');
