// The node agent: keeps an enrolled node's identity fresh.
//
// It loads the identity directory `sigil enrol` wrote, and from then on
//   - renews the certificate through CertificateAuthority.Renew, over mutual
//     TLS with the current certificate, at about 2/3 of its lifetime with
//     jitter (renewal-schedule.ts), retrying with capped exponential backoff;
//     with `rotateKey` every renewal also replaces the key (Renew with a
//     proof of possession of the new key);
//   - re-joins through Enrolment.Rejoin, proving possession of the enrolled
//     key, when the certificate expired while the node was down (an expired
//     certificate cannot authenticate a Renew);
//   - follows the trust bundle: GetTrustBundle at start, after every renewal
//     and periodically, so CA rotation reaches the node before any old CA ends;
//   - learns when it has been revoked: a call over mutual TLS that cannot get
//     through is followed by an anonymous Rejoin, whose answer decides
//     (node-revoked.ts); a revoked node stops with a NodeRevokedError
//     ('revoked' event) instead of retrying forever;
//   - writes each changed file atomically and feeds `agent.material`, a
//     MaterialProvider the transport's channelCredentials/MtlsServer use
//     directly when the agent runs inside the process that needs the identity.
// Timers are unref'd: the agent never keeps a process alive by itself.
//
// Every connection to the control plane pins the roots of the node's trust
// bundle and requires the server to be a replica of the node's trust domain.

import type { KeyObject } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { AddressFailover, isUnreachable } from '../client/address-failover.ts';
import { controlPlaneVerification, enrolmentCredentials } from '../client/control-plane-channel.ts';
import { DEFAULT_CALL_TIMEOUT_MS, retryAfterOf, unary } from '../client/rpc.ts';
import { bundlePem, chainPem, rootFingerprints, rootsOf } from '../client/trust-bundle.ts';
import { asSigilError, preconditionFailed, type SigilError } from '../errors.ts';
import {
  CertificateAuthorityClient,
  EnrolmentClient,
  type IssuedCertificate,
  type TrustBundle,
} from '../gen/sigil/v1/sigil.ts';
import { type Logger, silentLogger } from '../logging.ts';
import { type CertificateInfo, parseCertificate, readCertificates } from '../pki/certificate.ts';
import { generateKeyPair, type KeyType, keyTypeOf, privateKeyToPem, readPrivateKey } from '../pki/keys.ts';
import type { TlsMaterial } from '../pki/material.ts';
import { possessionFor, rejoinChallenge, signChallenge } from '../protocol/challenges.ts';
import { channelCredentials } from '../transport/client-credentials.ts';
import { MaterialProvider } from '../transport/material-provider.ts';
import type { ServerVerification } from '../transport/server-verification.ts';
import { validateMaterial } from '../transport/validate-material.ts';
import { type IdentityFiles, type NodeInfo, readIdentity, writeIdentity } from './identity-files.ts';
import { asRevocation, isPermissionDenied, NodeRevokedError } from './node-revoked.ts';
import {
  delayUntil,
  type RandomSource,
  type RenewalPolicy,
  renewalAction,
  renewalPolicy,
  renewalTime,
  retryDelay,
  type Validity,
} from './renewal-schedule.ts';

export interface NodeAgentOptions {
  /** The identity directory written by `sigil enrol`. */
  readonly dir: string;
  readonly policy?: Partial<RenewalPolicy>;
  /**
   * Replace the key at every renewal. Default false: the enrolled key is
   * kept, because Rejoin (after an expiry) proves possession of the key the
   * node enrolled with, and the node ID is derived from it; a node that
   * rotates its key can no longer re-join, only renew while it is valid.
   */
  readonly rotateKey?: boolean;
  /** Key type for rotated keys. Default: the type of the current key. */
  readonly keyType?: KeyType;
  /** How often the trust bundle is fetched besides after each renewal. Default 10 min. */
  readonly bundleRefreshMs?: number;
  /** Deadline of each call to the control plane. Default 15 s. */
  readonly callTimeoutMs?: number;
  readonly logger?: Logger;
  readonly random?: RandomSource;
  /**
   * The clock the schedule decides by (tests use it to make a certificate due
   * without waiting). Proofs of possession and material checks always use
   * the real clock, as the server does.
   */
  readonly now?: () => Date;
}

/** The node's current certificate, as the agent reports it. */
export interface CertificateStatus {
  readonly serial: string;
  readonly spiffeId: string | null;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** When the agent plans to renew it. */
  readonly renewAt: Date;
}

export type RenewalOutcome =
  | { readonly kind: 'renewed'; readonly certificate: CertificateStatus; readonly previousSerial: string }
  | { readonly kind: 'rejoined'; readonly certificate: CertificateStatus; readonly previousSerial: string }
  | { readonly kind: 'not-due'; readonly certificate: CertificateStatus };

export interface NodeAgentEvents {
  renewed: [RenewalOutcome];
  bundle: [{ readonly roots: number; readonly intermediates: number }];
  failure: [{ readonly error: SigilError; readonly failures: number; readonly retryInMs: number }];
  /** The control plane refuses this node any certificate: the agent has stopped its schedule. */
  revoked: [NodeRevokedError];
}

const DEFAULT_BUNDLE_REFRESH_MS = 10 * 60_000;

function certificateValidity(material: MaterialProvider): Validity {
  const { leaf } = material.currentValidated();
  return { notBefore: leaf.notBefore, notAfter: leaf.notAfter };
}

/** The leaf of the PEM chain in cert.pem. */
function leafOf(chain: string): CertificateInfo {
  return parseCertificate(readCertificates(chain, 'cert.pem')[0], 'cert.pem');
}

export class NodeAgent extends EventEmitter<NodeAgentEvents> {
  readonly dir: string;
  /** The node's identity for in-process TLS; updated at every renewal and bundle change. */
  readonly material: MaterialProvider;
  readonly #options: NodeAgentOptions;
  readonly #policy: RenewalPolicy;
  readonly #random: RandomSource;
  readonly #now: () => Date;
  readonly #logger: Logger;
  #info: NodeInfo;
  #renewAt: Date;
  #failures = 0;
  #timer: NodeJS.Timeout | undefined;
  #bundleTimer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> | undefined;
  #closed = false;
  #revoked: NodeRevokedError | undefined;
  readonly #failover = new AddressFailover();
  readonly #clients = new Map<string, CertificateAuthorityClient>();

  private constructor(
    options: NodeAgentOptions,
    identity: IdentityFiles,
    material: MaterialProvider,
    rejoinedFrom: string | undefined,
  ) {
    super();
    this.rejoinedFrom = rejoinedFrom;
    this.dir = options.dir;
    this.#options = options;
    this.#policy = renewalPolicy(options.policy);
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? (() => new Date());
    this.#logger = options.logger ?? silentLogger();
    this.#info = identity.info;
    this.material = material;
    this.#renewAt = renewalTime(certificateValidity(material), this.#random, this.#policy);
  }

  /**
   * Loads the identity in `options.dir`. When its certificate has expired,
   * re-joins first (there is no valid material to start from otherwise).
   */
  static async open(options: NodeAgentOptions): Promise<NodeAgent> {
    const identity = readIdentity(options.dir);
    const now = (options.now ?? (() => new Date()))();
    const leaf = leafOf(identity.material.certificateChain);
    if (now.getTime() < leaf.notAfter.getTime()) {
      return new NodeAgent(options, identity, new MaterialProvider(identity.material), undefined);
    }
    (options.logger ?? silentLogger()).warn(
      { nodeId: identity.info.nodeId, expiredAt: leaf.notAfter.toISOString() },
      'certificate expired; re-joining',
    );
    const rejoined = await rejoin(options, identity);
    return new NodeAgent(options, rejoined, new MaterialProvider(rejoined.material), leaf.serialHex);
  }

  /** The serial of the expired certificate replaced by a re-join in open(), if there was one. */
  readonly rejoinedFrom: string | undefined;

  get info(): NodeInfo {
    return this.#info;
  }

  get certificate(): CertificateStatus {
    const { leaf } = this.material.currentValidated();
    return {
      serial: leaf.serialHex,
      spiffeId: this.#info.spiffeId,
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
      renewAt: this.#renewAt,
    };
  }

  /** True when the certificate is in its renewal window (or expired). */
  isDue(): boolean {
    return renewalAction(certificateValidity(this.material), this.#renewAt, this.#now()).kind !== 'wait';
  }

  /**
   * Runs the schedule until close(): renewals, retries and bundle refreshes
   * (the first one at once, so a revoked node learns it at start). Stops by
   * itself, emitting 'revoked', when the control plane has revoked the node.
   */
  start(): void {
    if (this.#closed) throw preconditionFailed('the agent is closed');
    if (this.#revoked) throw this.#revoked;
    if (this.#timer !== undefined) return;
    this.#schedule(0);
    const refresh = () => {
      this.#serialized(() => (this.#revoked ? Promise.resolve(false) : this.refreshTrustBundle())).catch(
        (error: unknown) => {
          if (error instanceof NodeRevokedError) this.#stopRevoked(error);
          else this.#logger.warn({ err: asSigilError(error).message }, 'trust bundle refresh failed');
        },
      );
    };
    refresh();
    const every = this.#options.bundleRefreshMs ?? DEFAULT_BUNDLE_REFRESH_MS;
    this.#bundleTimer = setInterval(refresh, every);
    this.#bundleTimer.unref();
  }

  /** Renews when due (re-joins when expired); with `force`, renews now regardless. */
  renewIfDue(options: { force?: boolean } = {}): Promise<RenewalOutcome> {
    return this.#serialized(async () => {
      const action = renewalAction(certificateValidity(this.material), this.#renewAt, this.#now());
      if (action.kind === 'rejoin') return this.#rejoin();
      if (action.kind === 'renew' || options.force) return this.#renew();
      return { kind: 'not-due', certificate: this.certificate };
    });
  }

  /**
   * Fetches the trust bundle over mutual TLS; when it changed, writes
   * bundle.pem and node.json and updates `material`. Resolves to whether it
   * changed. When no server takes this node's certificate, asks the control
   * plane anonymously (Rejoin): a node that may carry on gets a new
   * certificate ('renewed' with kind 'rejoined'), a revoked one a
   * NodeRevokedError.
   */
  async refreshTrustBundle(): Promise<boolean> {
    try {
      return await this.#fetchBundle();
    } catch (error) {
      if (!isUnreachable(error)) throw error;
      await this.#rejoinAfterRefusal(error);
      return this.#fetchBundle();
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    clearInterval(this.#bundleTimer);
    this.#timer = undefined;
    this.#bundleTimer = undefined;
    await this.#running?.catch(() => {});
    this.#dropClients();
  }

  // ------------------------------------------------------------ internals

  get #callTimeout(): number {
    return this.#options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  }

  /** One operation at a time: the schedule, --once and bundle refreshes never overlap. */
  #serialized<T>(operation: () => Promise<T>): Promise<T> {
    const previous = this.#running ?? Promise.resolve();
    const next = previous.catch(() => {}).then(operation);
    this.#running = next.catch(() => {});
    return next;
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#serialized(() => this.#tick()).catch(() => {});
    }, delayMs);
    this.#timer.unref();
  }

  async #tick(): Promise<void> {
    if (this.#closed || this.#revoked) return;
    const validity = certificateValidity(this.material);
    const action = renewalAction(validity, this.#renewAt, this.#now());
    if (action.kind === 'wait') {
      this.#schedule(delayUntil(action.at, this.#now()));
      return;
    }
    try {
      if (action.kind === 'renew') await this.#renew();
      else await this.#rejoin();
      this.#failures = 0;
      this.#schedule(delayUntil(this.#renewAt, this.#now()));
    } catch (error) {
      if (error instanceof NodeRevokedError) {
        this.#stopRevoked(error);
        return;
      }
      this.#failures += 1;
      const failure = asSigilError(error);
      const retryInMs = retryDelay(
        this.#failures,
        validity,
        this.#now(),
        this.#random,
        this.#policy,
        retryAfterOf(error),
      );
      this.#logger.warn(
        { nodeId: this.#info.nodeId, failures: this.#failures, retryInMs, err: failure.message },
        action.kind === 'renew' ? 'renewal failed' : 're-join failed',
      );
      this.emit('failure', { error: failure, failures: this.#failures, retryInMs });
      this.#schedule(retryInMs);
    }
  }

  /** Tries each server address, starting with the last one that answered. */
  async #withServer<T>(call: (client: CertificateAuthorityClient, target: string) => Promise<T>): Promise<T> {
    return this.#failover.tryEach(this.#info.addresses, (target) => call(this.#client(target), target));
  }

  #dropClients(): void {
    for (const client of this.#clients.values()) client.close();
    this.#clients.clear();
  }

  #client(target: string): CertificateAuthorityClient {
    let client = this.#clients.get(target);
    if (client === undefined) {
      client = new CertificateAuthorityClient(
        target,
        channelCredentials({ material: this.material, verify: this.#serverVerification() }),
      );
      this.#clients.set(target, client);
    }
    return client;
  }

  /** Pins whatever roots the current bundle holds (they change with CA rotation). */
  #serverVerification(): ServerVerification {
    const current = () =>
      controlPlaneVerification(rootFingerprints(this.material.current().trustBundle), this.#info.trustDomain);
    return {
      description: `a sigil replica of ${this.#info.trustDomain} certified by a pinned root`,
      check: (server) => current().check(server),
    };
  }

  async #renew(): Promise<RenewalOutcome> {
    const previousSerial = this.certificate.serial;
    const current = this.material.current();
    let newKey: KeyObject | undefined;
    let request = {};
    if (this.#options.rotateKey) {
      const currentKey = readPrivateKey(current.privateKey, { source: 'key.pem' });
      newKey = generateKeyPair(this.#options.keyType ?? keyTypeOf(currentKey)).privateKey;
      const fingerprint = this.material.currentValidated().leaf.fingerprint;
      request = { possession: possessionFor(newKey, signChallenge(fingerprint)) };
    }
    let issued: IssuedCertificate;
    try {
      issued = await this.#withServer((client, target) =>
        unary(client, client.renew, request, { target, timeoutMs: this.#callTimeout }),
      );
    } catch (error) {
      // Refused at the handshake (unreachable) or by the authority (this
      // certificate is revoked): Rejoin decides, see node-revoked.ts.
      if (!isUnreachable(error) && !isPermissionDenied(error)) throw error;
      return this.#rejoinAfterRefusal(error);
    }
    const privateKey = newKey === undefined ? current.privateKey : privateKeyToPem(newKey);
    this.#install(issued, privateKey);
    await this.#fetchBundle().catch((error: unknown) => {
      this.#logger.warn({ err: asSigilError(error).message }, 'trust bundle refresh after renewal failed');
    });
    const outcome: RenewalOutcome = { kind: 'renewed', certificate: this.certificate, previousSerial };
    this.#logger.info(
      {
        nodeId: this.#info.nodeId,
        serial: outcome.certificate.serial,
        previousSerial,
        notAfter: outcome.certificate.notAfter.toISOString(),
        renewAt: outcome.certificate.renewAt.toISOString(),
        keyRotated: newKey !== undefined,
      },
      'certificate renewed',
    );
    this.emit('renewed', outcome);
    return outcome;
  }

  async #rejoin(): Promise<RenewalOutcome> {
    const previousSerial = this.certificate.serial;
    const current = this.material.current();
    const result = await rejoin(this.#options, { material: current, info: this.#info });
    this.#info = result.info;
    this.material.set(result.material);
    // The channels that failed with the old certificate sit in grpc-js's
    // reconnect backoff and would fail fast with the old error: start afresh.
    this.#dropClients();
    this.#renewAt = renewalTime(certificateValidity(this.material), this.#random, this.#policy);
    await this.#fetchBundle().catch((error: unknown) => {
      this.#logger.warn({ err: asSigilError(error).message }, 'trust bundle refresh after re-join failed');
    });
    const outcome: RenewalOutcome = { kind: 'rejoined', certificate: this.certificate, previousSerial };
    this.#logger.info(
      { nodeId: this.#info.nodeId, serial: outcome.certificate.serial, previousSerial },
      're-joined with the enrolled key',
    );
    this.emit('renewed', outcome);
    return outcome;
  }

  /** GetTrustBundle over mutual TLS and apply it; no recovery when the call fails. */
  #fetchBundle(): Promise<boolean> {
    return this.#withServer(async (client, target) => {
      const bundle = await unary(client, client.getTrustBundle, {}, { target, timeoutMs: this.#callTimeout });
      return this.#applyBundle(bundle);
    });
  }

  /**
   * A call with this node's certificate was refused (or could not get
   * through): Rejoin, anonymously, decides. Resolves with the new
   * certificate; rejects with a NodeRevokedError when the node or its key was
   * revoked, or with `refusal` when the enrolment channel does not answer
   * either (the server is down).
   */
  async #rejoinAfterRefusal(refusal: unknown): Promise<RenewalOutcome> {
    this.#logger.warn(
      { nodeId: this.#info.nodeId, err: asSigilError(refusal).message },
      "the control plane did not take this node's certificate; asking it anonymously (Rejoin with the enrolled key)",
    );
    try {
      return await this.#rejoin();
    } catch (rejoinError) {
      if (isUnreachable(rejoinError)) throw refusal;
      throw rejoinError;
    }
  }

  #stopRevoked(error: NodeRevokedError): void {
    if (this.#revoked) return;
    this.#revoked = error;
    clearTimeout(this.#timer);
    clearInterval(this.#bundleTimer);
    this.#logger.error({ nodeId: this.#info.nodeId, err: error.message }, 'node revoked; the agent stops');
    this.emit('revoked', error);
  }

  /** Validates, writes and publishes a newly issued certificate. */
  #install(issued: IssuedCertificate, privateKey: string): void {
    const material: TlsMaterial = {
      certificateChain: chainPem(issued),
      privateKey,
      trustBundle: this.material.current().trustBundle,
    };
    validateMaterial(material);
    const info: NodeInfo = { ...this.#info, state: 'UP', spiffeId: issued.spiffeId || this.#info.spiffeId };
    writeIdentity(this.dir, { privateKey, certificateChain: material.certificateChain, info });
    this.#info = info;
    this.material.set(material);
    this.#renewAt = renewalTime(certificateValidity(this.material), this.#random, this.#policy);
  }

  #applyBundle(bundle: TrustBundle): boolean {
    if (bundle.roots.length === 0) throw preconditionFailed('the server sent a trust bundle without roots');
    const trustBundle = bundlePem(bundle);
    const current = this.material.current();
    const info: NodeInfo = {
      ...this.#info,
      trustDomain: bundle.trustDomain || this.#info.trustDomain,
      rootFingerprint: bundle.rootFingerprint || this.#info.rootFingerprint,
    };
    if (trustBundle === current.trustBundle && info.rootFingerprint === this.#info.rootFingerprint)
      return false;
    const material: TlsMaterial = { ...current, trustBundle };
    validateMaterial(material);
    writeIdentity(this.dir, { trustBundle, info });
    this.#info = info;
    if (trustBundle !== current.trustBundle) this.material.set(material);
    this.#logger.info(
      { nodeId: this.#info.nodeId, roots: bundle.roots.length, intermediates: bundle.intermediates.length },
      'trust bundle updated',
    );
    this.emit('bundle', { roots: bundle.roots.length, intermediates: bundle.intermediates.length });
    return true;
  }
}

/**
 * Enrolment.Rejoin for the identity in `options.dir`: proves possession of
 * the enrolled key over the enrolment channel (roots of bundle.pem pinned),
 * writes the new certificate and returns the new material.
 */
async function rejoin(
  options: NodeAgentOptions,
  identity: IdentityFiles,
): Promise<{ material: TlsMaterial; info: NodeInfo }> {
  const key = readPrivateKey(identity.material.privateKey, { source: 'key.pem' });
  const roots = rootsOf(identity.material.trustBundle, 'bundle.pem');
  const credentials = enrolmentCredentials({
    roots,
    verify: controlPlaneVerification(
      rootFingerprints(identity.material.trustBundle),
      identity.info.trustDomain,
    ),
  });
  let lastError: unknown;
  for (const target of identity.info.addresses) {
    const client = new EnrolmentClient(target, credentials);
    try {
      const response = await unary(
        client,
        client.rejoin,
        { possession: possessionFor(key, rejoinChallenge()) },
        { target, timeoutMs: options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS },
      );
      if (response.state === 'REVOKED') {
        throw new NodeRevokedError(response.nodeId, `node ${response.nodeId} has been revoked`);
      }
      if (response.state !== 'UP' || response.certificate === undefined) {
        throw preconditionFailed(
          `node ${response.nodeId} is ${response.state}, not UP: it cannot re-join (sigil node approve ${response.nodeId})`,
        );
      }
      const material: TlsMaterial = {
        certificateChain: chainPem(response.certificate),
        privateKey: identity.material.privateKey,
        trustBundle: identity.material.trustBundle,
      };
      validateMaterial(material);
      const info: NodeInfo = {
        ...identity.info,
        state: 'UP',
        spiffeId: response.certificate.spiffeId || identity.info.spiffeId,
      };
      writeIdentity(options.dir, { certificateChain: material.certificateChain, info });
      return { material, info };
    } catch (error) {
      lastError = error;
      if (!isUnreachable(error)) throw asRevocation(error, identity.info.nodeId);
    } finally {
      client.close();
    }
  }
  throw lastError;
}
