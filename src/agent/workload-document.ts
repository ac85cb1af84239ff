// The metadata document of one running workload (guest/metadata-document.ts
// holds the shape): firebuild's keys filled from what the daemon runs — its
// name, image, command, environment, limits and its place on a bridge —
// plus, when the daemon has them, the build's Bootstrap section and the
// workload's identity.

import type { EntrypointInfo } from '../guest/dockerfile-image.ts';
import type {
  BootstrapMetadata,
  IdentityMetadata,
  InterfaceMetadata,
  MetadataDocument,
} from '../guest/metadata-document.ts';
import type { BridgeConfig } from '../workloads/address-pool.ts';
import type { WorkloadInfo, WorkloadSpec } from '../workloads/supervisor.ts';

export interface DocumentExtras {
  readonly bootstrap?: BootstrapMetadata;
  readonly identity?: IdentityMetadata;
  /** A built image's ENTRYPOINT and CMD (its metadata.json), for vminit's entrypoint runner. */
  readonly entrypoint?: EntrypointInfo;
}

/** a.b.c.d for a prefix length, e.g. 24 → 255.255.255.0. */
function netmaskOf(prefixLength: number): string {
  const bits = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  return [24, 16, 8, 0].map((shift) => (bits >>> shift) & 0xff).join('.');
}

function interfacesOf(
  info: WorkloadInfo,
  bridges: readonly BridgeConfig[],
): Record<string, InterfaceMetadata> {
  const interfaces: Record<string, InterfaceMetadata> = {};
  for (const [index, place] of info.addresses.entries()) {
    const bridge = bridges.find((candidate) => candidate.name === place.network);
    const [ip, prefix] = place.address.split('/');
    const prefixLength = Number(prefix);
    interfaces[place.mac] = {
      HostDeviceName: place.network,
      Gateway: bridge?.gateway ?? '',
      IfName: `eth${index}`,
      IP: ip,
      IPAddr: place.address,
      IPMask: netmaskOf(prefixLength),
      IPNet: bridge?.network ?? '',
      NameServers: '',
    };
  }
  return interfaces;
}

/** The document `spec`'s workload reads from the metadata service. */
export function workloadDocument(
  spec: WorkloadSpec,
  info: WorkloadInfo,
  bridges: readonly BridgeConfig[],
  extras: DocumentExtras = {},
): MetadataDocument {
  const env = { ...(spec.env ?? {}) };
  const entrypoint = extras.entrypoint
    ? { ...extras.entrypoint, Env: env }
    : {
        Cmd: [...spec.command],
        EntryPoint: [],
        Env: env,
        Shell: ['/bin/sh', '-c'],
        User: spec.user ?? '0:0',
        Workdir: spec.workdir ?? '/',
      };
  return {
    ...(extras.bootstrap ? { Bootstrap: extras.bootstrap } : {}),
    ...(extras.identity ? { Identity: extras.identity } : {}),
    VMMID: spec.name,
    Drives: {},
    EntrypointJSON: JSON.stringify(entrypoint),
    Env: env,
    LocalHostname: spec.name,
    ImageTag: spec.image,
    Machine: {
      CPU: String(spec.limits?.cpus?.length ?? 0),
      CPUTemplate: '',
      HTEnabled: 'false',
      KernelArgs: '',
      Mem: String(spec.limits?.memoryMiB ?? 0),
      VMLinux: '',
    },
    Network: { CniNetworkName: info.addresses[0]?.network ?? '', Interfaces: interfacesOf(info, bridges) },
    Users: {},
  };
}
