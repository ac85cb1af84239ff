// What a failed connection says about who refused whom, as the one line a
// person reads. grpc-js hands a client only the text of the last connection
// error ("No connection established. Last error: …"), so the facts are read
// from it:
//   - a TLS alert from the server (MtlsServer sends one for every refused
//     client certificate, tls-alert.ts): the server refused this client's
//     certificate, and the alert says why. OpenSSL writes "ssl/tls alert
//     certificate revoked", BoringSSL "SSLV3_ALERT_CERTIFICATE_REVOKED", Node
//     "ERR_SSL_SSL/TLS_ALERT_CERTIFICATE_REVOKED": all are recognised.
//   - an error of sigil's own connector (client-credentials.ts), which says
//     whether this client refused the server's certificate or cannot use its
//     own; or OpenSSL's verdict on the server's chain as another connector
//     reports it: this client refused the server.
// Anything else is left to the caller ("cannot reach …").
//
// No imports at run time: the CLI loads this on every command.
import type { TlsAlert } from './tls-alert.ts';

/**
 * How the errors of a sigil client connection begin when this side gave up
 * (client-credentials.ts writes them; grpc-js passes them on as text).
 */
export const SERVER_CERTIFICATE_REFUSED = "this client refused the server's certificate";
export const CLIENT_CERTIFICATE_UNUSABLE = "this client's certificate cannot be used";

/** Who refused the connection, and the line to show. */
export interface ConnectionRefusal {
  /**
   * 'server-refused-client': a TLS alert from the server about this client's
   * certificate; 'client-refused-server': this client's verdict on the
   * server's certificate; 'client-certificate-unusable': this client's own
   * certificate or key cannot be used (expired, mismatched): nothing was sent.
   */
  readonly kind: 'server-refused-client' | 'client-refused-server' | 'client-certificate-unusable';
  /** The TLS alert the server sent, when it sent one. */
  readonly alert?: TlsAlert;
  readonly message: string;
}

const ALERT_TEXT: Readonly<Record<string, TlsAlert>> = {
  'certificate revoked': 'certificate_revoked',
  'certificate expired': 'certificate_expired',
  'unknown ca': 'unknown_ca',
  'unsupported certificate': 'unsupported_certificate',
  'bad certificate': 'bad_certificate',
  'certificate unknown': 'certificate_unknown',
  'access denied': 'access_denied',
  'certificate required': 'certificate_required',
};

const ALERT_PATTERN = new RegExp(`alert (${Object.keys(ALERT_TEXT).join('|')})`);

/** Why the server refused this client's certificate, per alert; followed by the alert's name. */
const WHY: Readonly<Partial<Record<TlsAlert, string>>> = {
  certificate_revoked: "refused this client's certificate: it has been revoked",
  certificate_expired: "refused this client's certificate: it has expired; renew it",
  unknown_ca:
    "refused this client's certificate: it is not issued by a CA the server trusts (another deployment's identity, or a stale trust bundle?)",
  unsupported_certificate:
    "refused this client's certificate: it cannot authenticate a client (a CA certificate, or its key usage does not allow TLS client authentication)",
  bad_certificate:
    "refused this client's certificate as invalid: a name outside what its issuer may certify, a bad signature, a validity not yet begun, or a chain that breaks RFC 5280's rules",
  certificate_unknown: "could not accept this client's certificate",
  access_denied:
    'refused this connection: this identity already holds the most connections the server allows; close some and retry',
  certificate_required: 'requires a client certificate and this client sent none',
};

// OpenSSL's verdicts on a peer chain as Node words them (client side: the server's chain).
const CLIENT_VERDICTS =
  /^(unable to verify the first certificate|unable to get (local )?issuer certificate|self[- ]signed certificate|certificate has expired|certificate is not yet valid|certificate signature failure|certificate (chain too long|revoked)|Hostname\/IP does not match)/i;

/** The refusal a connection error text describes, or undefined when it is not one. */
export function connectionRefusal(details: string, target: string): ConnectionRefusal | undefined {
  const text = details.trim();
  const match = ALERT_PATTERN.exec(text.toLowerCase().replace(/[_/]+/g, ' '));
  if (match) {
    const alert = ALERT_TEXT[match[1]];
    return {
      kind: 'server-refused-client',
      alert,
      message: `the server at ${target} ${WHY[alert] ?? "refused this client's certificate"} (TLS alert ${alert})`,
    };
  }
  const own = /^(?:SigilError: )?(.*)$/s.exec(text)?.[1] ?? text;
  if (own.startsWith(`${SERVER_CERTIFICATE_REFUSED}: `)) {
    return {
      kind: 'client-refused-server',
      message: `this client refused the certificate of the server at ${target}: ${own.slice(SERVER_CERTIFICATE_REFUSED.length + 2)}`,
    };
  }
  if (own.startsWith(`${CLIENT_CERTIFICATE_UNUSABLE}: `)) {
    return { kind: 'client-certificate-unusable', message: `cannot connect to ${target}: ${own}` };
  }
  if (CLIENT_VERDICTS.test(text)) {
    // Another connector's (grpc-js createSsl) report of OpenSSL's verdict on the server's chain.
    return {
      kind: 'client-refused-server',
      message: `this client refused the certificate of the server at ${target}: ${text}`,
    };
  }
  return undefined;
}
