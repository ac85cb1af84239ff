// The workload daemon's calls to the control plane, as the node: the node
// agent's own material (kept fresh by it) and the same server checks the
// agent makes (pinned roots of the current bundle, a replica of the node's
// trust domain). Clients are made per address and kept; a call that cannot
// reach one address tries the next, starting with the last that answered.
import type { ChannelCredentials } from '@grpc/grpc-js';
import { AddressFailover, isUnreachable } from '../client/address-failover.ts';
import { controlPlaneVerification } from '../client/control-plane-channel.ts';
import { RpcError, STATUS_UNAVAILABLE, unary } from '../client/rpc.ts';
import { rootFingerprints } from '../client/trust-bundle.ts';
import { firstLineOf } from '../errors.ts';
import { CertificateAuthorityClient, WorkloadPlacementClient } from '../gen/sigil/v1/sigil.ts';
import type { Logger } from '../logging.ts';
import { DEFAULT_POLICY_OID_TEXT } from '../pki/policy-extension.ts';
import { channelCredentials } from '../transport/client-credentials.ts';
import type { MaterialProvider } from '../transport/material-provider.ts';
import type { ServerVerification } from '../transport/server-verification.ts';
import type { WorkloadCaller } from './workload-callers.ts';
import { unavailable } from './workload-grpc.ts';

export interface ControlPlaneLinkOptions {
  readonly material: MaterialProvider;
  /** The control plane's addresses and the node's trust domain, read at each call (they may change). */
  readonly addresses: () => readonly string[];
  readonly trustDomain: () => string;
}

interface Clients {
  readonly placement: WorkloadPlacementClient;
  readonly ca: CertificateAuthorityClient;
}

export class ControlPlaneLink {
  readonly #options: ControlPlaneLinkOptions;
  readonly #clients = new Map<string, Clients>();
  #credentials: ChannelCredentials | null = null;
  readonly #failover = new AddressFailover();

  constructor(options: ControlPlaneLinkOptions) {
    this.#options = options;
  }

  /** Calls `work` against each address in turn until one is reached. */
  async placement<T>(work: (client: WorkloadPlacementClient, target: string) => Promise<T>): Promise<T> {
    return this.#failover.tryEach(
      this.#options.addresses(),
      (target) => work(this.#clientsFor(target).placement, target),
      () => new RpcError(STATUS_UNAVAILABLE, 'the node knows no control-plane address'),
    );
  }

  /** A CertificateAuthority client for attempt `attempt` (rotating through the addresses). */
  authority(attempt: number): { client: CertificateAuthorityClient; target: string } {
    const target = this.#failover.pick(this.#options.addresses(), attempt);
    return { client: this.#clientsFor(target).ca, target };
  }

  /**
   * Reserves `resources` for `caller` under `name` (its leaf and chain go
   * along, for the control plane to admit). Refused UNAVAILABLE, "nothing was
   * created", when no replica answers.
   */
  async reserve(
    caller: WorkloadCaller,
    name: string,
    resources: { workloads: number; cpus: readonly number[]; memoryMib: number; blockMib: number },
    timeoutMs: number,
  ): Promise<void> {
    try {
      await this.placement((client, target) =>
        unary(
          client,
          client.reserveWorkload,
          {
            leaf: caller.kind === 'admin' ? Buffer.alloc(0) : caller.leaf,
            chain: [...caller.presented],
            name,
            ...resources,
            cpus: [...resources.cpus],
          },
          { target, timeoutMs },
        ),
      );
    } catch (error) {
      if (isUnreachable(error))
        throw unavailable(
          `cannot reach the control plane; nothing was created (${firstLineOf(error)})`,
          error,
        );
      throw error;
    }
  }

  /** Releases a reservation this node holds; "" (an admin's) holds nothing. */
  async release(subtree: string, name: string, timeoutMs: number): Promise<void> {
    if (subtree === '') return;
    await this.placement((client, target) =>
      unary(client, client.releaseWorkload, { subtree, name }, { target, timeoutMs }),
    );
  }

  close(): void {
    for (const clients of this.#clients.values()) {
      clients.placement.close();
      clients.ca.close();
    }
    this.#clients.clear();
  }

  #clientsFor(target: string): Clients {
    let clients = this.#clients.get(target);
    if (clients === undefined) {
      this.#credentials ??= channelCredentials({
        material: this.#options.material,
        verify: this.#verification(),
      });
      clients = {
        placement: new WorkloadPlacementClient(target, this.#credentials),
        ca: new CertificateAuthorityClient(target, this.#credentials),
      };
      this.#clients.set(target, clients);
    }
    return clients;
  }

  /** Pins whatever roots the current bundle holds (they change with CA rotation). */
  #verification(): ServerVerification {
    const current = () =>
      controlPlaneVerification(
        rootFingerprints(this.#options.material.current().trustBundle),
        this.#options.trustDomain(),
      );
    return {
      description: `a sigil replica of ${this.#options.trustDomain()} certified by a pinned root`,
      check: (server) => current().check(server),
    };
  }
}

/** The deployment's policy OID from the trust bundle (the default when the control plane does not answer). */
export async function policyOidOf(
  link: ControlPlaneLink,
  logger: Logger,
  timeoutMs: number,
): Promise<string> {
  try {
    const { client, target } = link.authority(0);
    const bundle = await unary(client, client.getTrustBundle, {}, { target, timeoutMs });
    return bundle.policyOid || DEFAULT_POLICY_OID_TEXT;
  } catch (error) {
    logger.warn(
      { err: firstLineOf(error) },
      `cannot read the deployment's policy OID from the control plane; assuming ${DEFAULT_POLICY_OID_TEXT}`,
    );
    return DEFAULT_POLICY_OID_TEXT;
  }
}
