// The mutual-TLS credentials of one build's bootstrap service: a CA made for
// this build alone, a server certificate for the name the guest dials
// (firebuild uses the VMMID), and one client certificate, which reaches the
// guest through the metadata document's Bootstrap section. Everything lasts
// minutes (a build's bootstrap is short) and nothing is renewed or written to
// disk: the service trusts this build's CA only, so a certificate of any other
// build, or any other deployment, is refused at the handshake.

import { parseDuration } from '../pki/duration.ts';
import type { KeyType } from '../pki/keys.ts';
import { EmbeddedCA, type Lifetime } from '../transport/embedded-ca.ts';
import type { BootstrapMetadata } from './metadata-document.ts';

export const DEFAULT_BOOTSTRAP_VALIDITY = '5m';
/** firebuild's default: how often vminit pings its bootstrap service. */
export const DEFAULT_PING_INTERVAL = '5s';

export interface BootstrapCredentialsOptions {
  /** The name in the server certificate that the guest checks (firebuild: the VMMID). */
  readonly serverName: string;
  /** Lifetime of both certificates. Default 5 minutes. */
  readonly validity?: Lifetime;
  /** Default 'p256'. */
  readonly keyType?: KeyType;
}

/** A certificate chain (leaf first) and its key, PEM. */
export interface CertifiedKey {
  readonly certificateChain: string;
  readonly privateKey: string;
}

export interface BootstrapCredentials {
  /** Canonical form of the name the server certificate carries. */
  readonly serverName: string;
  /** PEM of this build's CA chain: what both ends trust, and nothing else. */
  readonly caChainPem: string;
  readonly server: CertifiedKey;
  /** The guest's identity. */
  readonly client: CertifiedKey;
  /** When the certificates expire. */
  readonly notAfter: Date;
}

const lifetimeMs = (value: Lifetime): number => (typeof value === 'string' ? parseDuration(value) : value);

/** A fresh CA and its two leaves. Throws SigilError invalid for a bad name or lifetime. */
export function createBootstrapCredentials(options: BootstrapCredentialsOptions): BootstrapCredentials {
  const validity = options.validity ?? DEFAULT_BOOTSTRAP_VALIDITY;
  const ca = EmbeddedCA.create({
    addresses: [options.serverName],
    keyType: options.keyType ?? 'p256',
    leafTtl: validity,
    // The CA only has to outlive its two leaves; it is forgotten with the build.
    caTtl: 2 * lifetimeMs(validity),
  });
  try {
    const server = ca.issueServer();
    const client = ca.issueClient('vminit');
    return {
      serverName: ca.addresses[0],
      caChainPem: ca.chainPem(),
      server: { certificateChain: server.certificateChain, privateKey: server.privateKey },
      client: { certificateChain: client.certificateChain, privateKey: client.privateKey },
      notAfter: new Date(Math.min(client.notAfter.getTime(), server.notAfter.getTime())),
    };
  } finally {
    ca.close();
  }
}

/** The metadata document's Bootstrap section for a service listening at `hostPort`. */
export function bootstrapMetadata(
  credentials: BootstrapCredentials,
  hostPort: string,
  pingInterval = DEFAULT_PING_INTERVAL,
): BootstrapMetadata {
  return {
    HostPort: hostPort,
    CAChain: credentials.caChainPem,
    Cert: credentials.client.certificateChain,
    Key: credentials.client.privateKey,
    ServerName: credentials.serverName,
    PingInterval: pingInterval,
  };
}
