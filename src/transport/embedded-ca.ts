// An in-process certificate authority for services that want mutual TLS
// without a PKI to run: firebuild's embedded CA, done better. Everything lives
// in memory (no files); the root (and optional intermediate) get real,
// non-empty subjects; addresses are split into DNS and IP SANs; every leaf
// carries a SPIFFE ID; the CAs outlive the leaves they issue; and the
// credentials it hands out renew their leaf on their own.
//
// It issues through src/pki's Issuer (the fast DER path) and hands material
// to the rest of sigil through MaterialSource, so sigil's own MtlsServer and
// channelCredentials() treat it like any other source. For users of plain
// grpc-js (`server.bindAsync`) or plain Node TLS there are ready-made
// credentials and options too.

import { randomBytes } from 'node:crypto';
import type { SecureServerOptions } from 'node:http2';
import { isIP } from 'node:net';
import type { ConnectionOptions, SecureContextOptions, TlsOptions } from 'node:tls';
import { type ChannelCredentials, ServerCredentials } from '@grpc/grpc-js';
import { invalid, messageOf, preconditionFailed } from '../errors.ts';
import { parseCertificate, readCertificates } from '../pki/certificate.ts';
import { formatDuration, parseDuration } from '../pki/duration.ts';
import { createRootCertificate, Issuer } from '../pki/issuer.ts';
import { generateKeyPair, type KeyType, parseKeyType, privateKeyToPem, readPrivateKey } from '../pki/keys.ts';
import type { MaterialSource, TlsMaterial } from '../pki/material.ts';
import {
  classifyAddress,
  DEFAULT_TRUST_DOMAIN,
  type GeneralName,
  parseTrustDomain,
  spiffeId,
  uriName,
} from '../pki/names.ts';
import { encodePem } from '../pki/pem.ts';
import { channelCredentials } from './client-credentials.ts';
import { asMaterialError } from './material-errors.ts';
import { MaterialProvider } from './material-provider.ts';
import { type ServerVerification, toCheckServerIdentity, verifyServerName } from './server-verification.ts';

/** A lifetime: a duration string such as "1h" or "90d", or milliseconds. */
export type Lifetime = string | number;

export interface EmbeddedCAOptions {
  /** Names and addresses the server is reached by; IP literals become IP SANs, the rest DNS SANs. */
  readonly addresses: readonly string[];
  /** Key type of every key the CA generates. Default 'p256'; 'rsa4096' for parity with firebuild. */
  readonly keyType?: KeyType;
  /** Put an intermediate CA between the root and the leaves. Default false. */
  readonly intermediate?: boolean;
  /** Lifetime of issued leaves. Default '1h'. */
  readonly leafTtl?: Lifetime;
  /** Lifetime of the generated root and intermediate; must exceed leafTtl. Default: max(365 days, 10 × leafTtl). */
  readonly caTtl?: Lifetime;
  /** Trust domain of the leaves' SPIFFE IDs. Default 'sigil.internal'. */
  readonly trustDomain?: string;
  /**
   * Issue under an existing CA instead of generating a root. `certificate` is
   * PEM: the signing CA first, then its issuers up to the self-signed root.
   */
  readonly ca?: { readonly certificate: string; readonly privateKey: string };
  /** Told when an automatic leaf renewal fails (the previous leaf keeps serving). Default: a process warning. */
  readonly onError?: (error: unknown) => void;
}

/** A certificate and key the CA issued, in PEM, ready to hand to a peer or write out. */
export interface IssuedLeaf {
  /** The leaf, then the intermediates up to (not including) the root. */
  readonly certificateChain: string;
  readonly privateKey: string;
  /** Canonical serial: lower-case hex, no leading zeros. */
  readonly serial: string;
  readonly spiffeId: string;
  readonly notAfter: Date;
}

export interface LeafOptions {
  /** Lifetime of this leaf; default the CA's leafTtl. Never longer than the CA. */
  readonly ttl?: Lifetime;
}

export interface ServerLeafOptions extends LeafOptions {
  /** Names and addresses for this leaf; default the CA's addresses. */
  readonly addresses?: readonly string[];
}

const DAY_MS = 86_400_000;
const MIN_TLS_VERSION = 'TLSv1.3';
// setTimeout cannot wait longer than this (about 24.8 days).
const MAX_TIMER_MS = 2 ** 31 - 1;

function lifetimeMs(value: Lifetime, what: string): number {
  if (typeof value === 'string') return parseDuration(value);
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw invalid(
      `${what} must be a positive whole number of milliseconds or a duration like "1h" (got ${value})`,
    );
  }
  return value;
}

/** A SPIFFE path segment for an address: the characters a segment cannot hold (":" of IPv6, "*") become "_". */
function addressSegment(address: string): string {
  return address.replace(/[^A-Za-z0-9._-]/g, '_');
}

function addressNames(addresses: readonly string[], what: string): GeneralName[] {
  if (addresses.length === 0)
    throw invalid(`${what} needs at least one address (a DNS name or an IP address)`);
  const names: GeneralName[] = [];
  const seen = new Set<string>();
  for (const address of addresses) {
    if (typeof address !== 'string') {
      throw invalid(
        `${what}: every address must be a string (a DNS name or an IP address), got ${typeof address}`,
      );
    }
    const name = classifyAddress(address.trim());
    const key = `${name.type}:${name.value}`;
    if (!seen.has(key)) {
      seen.add(key);
      names.push(name);
    }
  }
  return names;
}

function certificatePem(der: Buffer): string {
  return encodePem('CERTIFICATE', der);
}

/** A freshly issued leaf as material, with when it was issued and when it ends (ms since the epoch). */
export interface RenewedMaterial {
  readonly material: TlsMaterial;
  readonly issuedAt: number;
  readonly notAfter: number;
}

/**
 * Material that renews its own leaf at about 2/3 of its lifetime (±5 %, so a
 * fleet started together does not renew together) and announces each
 * renewal. Its timer never keeps the process alive.
 */
export class RenewingMaterialSource implements MaterialSource {
  readonly #issue: () => RenewedMaterial;
  readonly #provider: MaterialProvider;
  readonly #onError: (error: unknown) => void;
  #notAfter: number;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  /** `issue` makes a fresh leaf; its failures during automatic renewal go to `onError`. */
  constructor(issue: () => RenewedMaterial, onError: (error: unknown) => void) {
    this.#issue = issue;
    this.#onError = onError;
    const first = issue();
    this.#provider = new MaterialProvider(first.material, { onListenerError: onError });
    this.#notAfter = first.notAfter;
    this.#scheduleAfter(first);
  }

  current(): TlsMaterial {
    return this.#provider.current();
  }

  subscribe(listener: (material: TlsMaterial) => void): () => void {
    return this.#provider.subscribe(listener);
  }

  /** Issues a fresh leaf now, makes it current and announces it. */
  renew(): TlsMaterial {
    const next = this.#issue();
    this.#provider.set(next.material);
    this.#notAfter = next.notAfter;
    this.#scheduleAfter(next);
    return next.material;
  }

  /** Stops renewing; current() keeps returning the last leaf. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #scheduleAfter(leaf: RenewedMaterial): void {
    const lifetime = leaf.notAfter - leaf.issuedAt;
    const fraction = 2 / 3 + (Math.random() - 0.5) * 0.1;
    this.#scheduleAt(leaf.issuedAt + Math.max(1000, lifetime * fraction), lifetime);
  }

  #scheduleAt(at: number, lifetime: number): void {
    clearTimeout(this.#timer);
    if (this.#closed) return;
    const delay = Math.min(Math.max(0, at - Date.now()), MAX_TIMER_MS);
    this.#timer = setTimeout(() => {
      if (Date.now() < at) {
        this.#scheduleAt(at, lifetime); // a wait longer than one timer allows
        return;
      }
      try {
        this.renew();
      } catch (error) {
        this.#onError(error);
        // Retry while the current leaf is still valid; once it has expired
        // (e.g. together with its CA) retrying cannot help.
        const retryAt = Date.now() + Math.max(1000, lifetime / 10);
        if (retryAt < this.#notAfter) this.#scheduleAt(retryAt, lifetime);
      }
    }, delay);
    this.#timer.unref();
  }
}

/**
 * grpc-js server credentials over a renewing source: TLS 1.3 minimum, client
 * certificates required and verified against the CA chain. Relies on grpc-js
 * 1.14's public-in-.d.ts ServerCredentials members: the constructor
 * (server options, secure context options), the protected
 * updateSecureContextOptions() (grpc-js then calls setSecureContext on its
 * listening servers) and the abstract _equals().
 */
class RenewingServerCredentials extends ServerCredentials {
  constructor(source: MaterialSource) {
    const serverOptions: SecureServerOptions = {
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: MIN_TLS_VERSION,
    };
    super(serverOptions, contextOptions(source.current()));
    source.subscribe((material) => this.updateSecureContextOptions(contextOptions(material)));
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}

/** Secure context options of one material. minVersion is repeated on purpose: Node's setSecureContext forgets it otherwise. */
function contextOptions(material: TlsMaterial): SecureContextOptions {
  return {
    cert: material.certificateChain,
    key: material.privateKey,
    ca: material.trustBundle,
    minVersion: MIN_TLS_VERSION,
  };
}

export class EmbeddedCA {
  readonly trustDomain: string;
  readonly keyType: KeyType;
  readonly leafTtlMs: number;
  /** Canonical addresses (DNS names lower-cased, IPs in canonical form), in the order given. */
  readonly addresses: readonly string[];
  /** When the signing CA expires; no leaf outlives it. */
  readonly notAfter: Date;
  readonly #serverNames: readonly GeneralName[];
  readonly #issuer: Issuer;
  /** PEM of the CAs between a leaf and the root, signing CA first. */
  readonly #intermediatesPem: string;
  /** PEM of every CA certificate, signing CA first, root last. */
  readonly #chainPem: string;
  readonly #onError: (error: unknown) => void;
  #serverSource: RenewingMaterialSource | undefined;
  readonly #clientSources = new Map<string, RenewingMaterialSource>();

  private constructor(fields: {
    trustDomain: string;
    keyType: KeyType;
    leafTtlMs: number;
    serverNames: GeneralName[];
    issuer: Issuer;
    intermediatesPem: string;
    chainPem: string;
    onError: (error: unknown) => void;
  }) {
    this.trustDomain = fields.trustDomain;
    this.keyType = fields.keyType;
    this.leafTtlMs = fields.leafTtlMs;
    this.#serverNames = fields.serverNames;
    this.addresses = fields.serverNames.map((name) => name.value);
    this.#issuer = fields.issuer;
    this.notAfter = fields.issuer.certificate.notAfter;
    this.#intermediatesPem = fields.intermediatesPem;
    this.#chainPem = fields.chainPem;
    this.#onError = fields.onError;
  }

  /**
   * Generates the root (+ intermediate), or takes an existing CA, and checks
   * that the CA will outlive its leaves. Throws a SigilError on bad options.
   * Key generation is synchronous: fast for P-256, seconds for RSA-4096.
   */
  static create(options: EmbeddedCAOptions): EmbeddedCA {
    const keyType = parseKeyType(options.keyType ?? 'p256');
    const trustDomain = parseTrustDomain(options.trustDomain ?? DEFAULT_TRUST_DOMAIN);
    if (options.addresses !== undefined && !Array.isArray(options.addresses)) {
      throw invalid('an embedded CA needs addresses: an array of DNS names or IP addresses');
    }
    const serverNames = addressNames(options.addresses ?? [], 'an embedded CA');
    const leafTtlMs = lifetimeMs(options.leafTtl ?? '1h', 'leafTtl');
    const caTtlMs =
      options.caTtl === undefined
        ? Math.max(365 * DAY_MS, 10 * leafTtlMs)
        : lifetimeMs(options.caTtl, 'caTtl');
    if (options.caTtl !== undefined && caTtlMs <= leafTtlMs) {
      throw invalid(
        `caTtl (${formatDuration(caTtlMs)}) must be longer than leafTtl (${formatDuration(leafTtlMs)}): ` +
          'a CA has to outlive the leaves it issues',
      );
    }
    const onError =
      options.onError ??
      ((error: unknown) => process.emitWarning(`embedded CA: ${messageOf(error)}`, 'SigilMaterialWarning'));
    // A short random tag keeps two embedded CAs (two processes, two tests)
    // from having identical subjects in one trust store.
    const tag = randomBytes(3).toString('hex');

    let issuer: Issuer;
    let intermediates: Buffer[];
    let chain: Buffer[];
    if (options.ca) {
      const { certificate, privateKey } = options.ca;
      if (typeof certificate !== 'string' || typeof privateKey !== 'string') {
        throw invalid('the embedded CA option "ca" needs certificate and privateKey as PEM text');
      }
      const given = asMaterialError('embedded CA: the CA certificate', () =>
        readCertificates(certificate, 'CA certificate').map((der) => parseCertificate(der, 'CA certificate')),
      );
      const root = given[given.length - 1];
      if (root.subject !== root.issuer) {
        throw invalid(
          `the CA certificate PEM must end with its self-signed root; "${root.subject}" was issued by "${root.issuer}" (append that certificate)`,
        );
      }
      const caKey = asMaterialError('embedded CA: the CA private key', () =>
        readPrivateKey(privateKey, { source: 'CA private key' }),
      );
      issuer = asMaterialError('embedded CA: the CA certificate and key', () =>
        Issuer.fromCertificate(given[0].der, caKey),
      );
      const remaining = issuer.certificate.notAfter.getTime() - Date.now();
      if (remaining <= leafTtlMs) {
        throw preconditionFailed(
          `CA "${issuer.certificate.subject}" expires at ${issuer.certificate.notAfter.toISOString()}, ` +
            `before a leaf issued now for leafTtl ${formatDuration(leafTtlMs)} would: a CA has to outlive its leaves`,
        );
      }
      intermediates = given.slice(0, -1).map((c) => c.der);
      chain = given.map((c) => c.der);
    } else {
      const rootKeys = generateKeyPair(keyType);
      const root = createRootCertificate({
        privateKey: rootKeys.privateKey,
        subject: { commonName: `sigil embedded root CA ${tag}`, organization: 'sigil' },
        ttlMs: caTtlMs,
        pathLen: options.intermediate ? 1 : 0,
      });
      issuer = Issuer.fromIssued(root, rootKeys.privateKey);
      intermediates = [];
      chain = [root.der];
    }
    if (options.intermediate) {
      const keys = generateKeyPair(keyType);
      const intermediate = issuer.issue({
        publicKey: keys.publicKey,
        profile: 'intermediate',
        subject: { commonName: `sigil embedded intermediate CA ${tag}`, organization: 'sigil' },
        ttlMs: caTtlMs,
        pathLen: 0,
      });
      if (intermediate.notAfter.getTime() - Date.now() <= leafTtlMs) {
        throw preconditionFailed(
          `the intermediate CA would expire at ${intermediate.notAfter.toISOString()}, before a leaf with leafTtl ${formatDuration(leafTtlMs)}`,
        );
      }
      issuer = Issuer.fromIssued(intermediate, keys.privateKey);
      intermediates = [intermediate.der, ...intermediates];
      chain = [intermediate.der, ...chain];
    }
    return new EmbeddedCA({
      trustDomain,
      keyType,
      leafTtlMs,
      serverNames,
      issuer,
      intermediatesPem: intermediates.map(certificatePem).join(''),
      chainPem: chain.map(certificatePem).join(''),
      onError,
    });
  }

  /** PEM of the CA chain (signing CA first, root last): the trust bundle for peers of this CA. */
  chainPem(): string {
    return this.#chainPem;
  }

  /** A server leaf for the CA's addresses (or `options.addresses`), with SPIFFE ID spiffe://<td>/server/<first address>. */
  issueServer(options: ServerLeafOptions = {}): IssuedLeaf {
    return this.#issueServer(options).leaf;
  }

  /** A client leaf with SPIFFE ID spiffe://<td>/client/<name>; `name` must be a valid SPIFFE path segment. */
  issueClient(name = 'client', options: LeafOptions = {}): IssuedLeaf {
    return this.#issueClient(name, options).leaf;
  }

  /**
   * The server's material (leaf, key, CA chain as trust bundle for client
   * certificates), renewed automatically; for sigil's MtlsServer. One source
   * per CA, created on first use.
   */
  serverMaterial(): RenewingMaterialSource {
    this.#serverSource ??= new RenewingMaterialSource(
      () => this.#materialOf(this.#issueServer({})),
      this.#onError,
    );
    return this.#serverSource;
  }

  /** A client's material, renewed automatically; for channelCredentials(). One source per name. */
  clientMaterial(name = 'client'): RenewingMaterialSource {
    let source = this.#clientSources.get(name);
    if (source === undefined) {
      spiffeId(this.trustDomain, 'client', name); // refuse a bad name before creating anything
      source = new RenewingMaterialSource(() => this.#materialOf(this.#issueClient(name, {})), this.#onError);
      this.#clientSources.set(name, source);
    }
    return source;
  }

  /**
   * grpc-js ServerCredentials for `server.bindAsync`: TLS 1.3 minimum, client
   * certificates required and verified against this CA, the server leaf
   * renewed in place (grpc-js applies it with setSecureContext).
   */
  serverCredentials(): ServerCredentials {
    return new RenewingServerCredentials(this.serverMaterial());
  }

  /**
   * grpc-js ChannelCredentials with a client identity of this CA, only this
   * CA's chain trusted, and the server name checked against `serverName`
   * (default: the CA's first address), whatever address the channel dials.
   */
  channelCredentials(
    options: { serverName?: string; name?: string; verify?: ServerVerification } = {},
  ): ChannelCredentials {
    return channelCredentials({
      material: this.clientMaterial(options.name),
      serverName: options.serverName ?? this.addresses[0],
      verify: options.verify,
    });
  }

  /**
   * Options for Node's tls.createServer: TLS 1.3 minimum, client certificates
   * required and verified. A snapshot of the current server leaf: long-lived
   * servers should apply serverMaterial() updates with setSecureContext (and
   * pass minVersion again, which setSecureContext otherwise drops).
   */
  tlsOptions(): TlsOptions {
    return {
      ...contextOptions(this.serverMaterial().current()),
      requestCert: true,
      rejectUnauthorized: true,
    };
  }

  /**
   * Options for Node's tls.connect: TLS 1.3 minimum, a client certificate,
   * only this CA trusted, the server name checked against `serverName`
   * (default: the CA's first address).
   */
  tlsClientOptions(options: { name?: string; serverName?: string } = {}): ConnectionOptions {
    const serverName = options.serverName ?? this.addresses[0];
    return {
      ...contextOptions(this.clientMaterial(options.name).current()),
      servername: isIP(serverName) === 0 ? serverName : undefined,
      checkServerIdentity: toCheckServerIdentity(verifyServerName(serverName)),
    };
  }

  /** Stops every renewal timer this CA started. Issued material stays usable until it expires. */
  close(): void {
    this.#serverSource?.close();
    for (const source of this.#clientSources.values()) source.close();
  }

  #issueServer(options: ServerLeafOptions): { leaf: IssuedLeaf; issuedAt: number } {
    const names =
      options.addresses === undefined
        ? this.#serverNames
        : addressNames(options.addresses, 'a server certificate');
    const id = spiffeId(this.trustDomain, 'server', addressSegment(names[0].value));
    return this.#issueLeaf(
      'server',
      { commonName: names[0].value.slice(0, 64) },
      [...names, uriName(id)],
      id,
      options,
    );
  }

  #issueClient(name: string, options: LeafOptions): { leaf: IssuedLeaf; issuedAt: number } {
    const id = spiffeId(this.trustDomain, 'client', name);
    return this.#issueLeaf('client', { commonName: name.slice(0, 64) }, [uriName(id)], id, options);
  }

  #issueLeaf(
    profile: 'server' | 'client',
    subject: { commonName: string },
    sans: GeneralName[],
    id: string,
    options: LeafOptions,
  ): { leaf: IssuedLeaf; issuedAt: number } {
    const ttlMs = options.ttl === undefined ? this.leafTtlMs : lifetimeMs(options.ttl, 'ttl');
    const keys = generateKeyPair(this.keyType);
    const now = new Date();
    const issued = this.#issuer.issue({ publicKey: keys.publicKey, profile, subject, sans, ttlMs, now });
    return {
      issuedAt: now.getTime(),
      leaf: {
        certificateChain: certificatePem(issued.der) + this.#intermediatesPem,
        privateKey: privateKeyToPem(keys.privateKey),
        serial: issued.serialHex,
        spiffeId: id,
        notAfter: issued.notAfter,
      },
    };
  }

  #materialOf(issued: { leaf: IssuedLeaf; issuedAt: number }): RenewedMaterial {
    return {
      material: {
        certificateChain: issued.leaf.certificateChain,
        privateKey: issued.leaf.privateKey,
        trustBundle: this.#chainPem,
      },
      issuedAt: issued.issuedAt,
      notAfter: issued.leaf.notAfter.getTime(),
    };
  }
}
