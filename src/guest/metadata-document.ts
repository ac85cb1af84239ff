// The document a guest reads from the metadata service, in firebuild's shape
// (combust-labs/firebuild-mmds, mmds/mmds.go: CamelCase JSON keys), so that
// firebuild's vminit and sigil's read the same thing. The host serves it as
// {"latest":{"meta-data": document}}; a guest asks for
// /latest/meta-data with `Accept: application/json` (the JSON of that
// subtree) or without it (Firecracker's plain-text listing).
//
// Every value is a string or an object of them, as in firebuild: the plain
// text form has no other types.

/** What a guest needs to reach its build's bootstrap service over mTLS (present only during a build). */
export interface BootstrapMetadata {
  /** host:port of the per-build bootstrap gRPC service. */
  readonly HostPort: string;
  /** PEM: the CA chain the guest trusts for that service. */
  readonly CAChain: string;
  /** PEM: the guest's client certificate and key. */
  readonly Cert: string;
  readonly Key: string;
  /** The name the service's certificate carries. */
  readonly ServerName: string;
  /** A Go duration ("5s"): how often the guest pings. */
  readonly PingInterval: string;
}

export interface DriveMetadata {
  readonly DriveID: string;
  readonly IsReadOnly: string;
  readonly IsRootDevice: string;
  readonly PartUUID: string;
  readonly PathOnHost: string;
}

export interface MachineMetadata {
  readonly CPU: string;
  readonly CPUTemplate: string;
  readonly HTEnabled: string;
  readonly KernelArgs: string;
  readonly Mem: string;
  readonly VMLinux: string;
}

export interface InterfaceMetadata {
  readonly HostDeviceName: string;
  readonly Gateway: string;
  readonly IfName: string;
  readonly IP: string;
  readonly IPAddr: string;
  readonly IPMask: string;
  readonly IPNet: string;
  readonly NameServers: string;
}

export interface NetworkMetadata {
  readonly CniNetworkName: string;
  /** By MAC address. */
  readonly Interfaces: Readonly<Record<string, InterfaceMetadata>>;
}

/**
 * sigil's addition (firebuild has no workload identity): the workload's own
 * short-lived certificate, its key, and the CA certificates to trust, PEM;
 * replaced in place before it expires. Guests that don't know it ignore it.
 */
export interface IdentityMetadata {
  readonly SpiffeID: string;
  /** PEM: the workload's certificate (then any intermediates). */
  readonly Cert: string;
  readonly Key: string;
  /** PEM: the deployment's CA certificates, to verify sigil-protected servers. */
  readonly CAChain: string;
  /** RFC 3339. */
  readonly NotAfter: string;
}

export interface MetadataDocument {
  readonly Bootstrap?: BootstrapMetadata;
  readonly Identity?: IdentityMetadata;
  readonly VMMID: string;
  readonly Drives: Readonly<Record<string, DriveMetadata>>;
  /** JSON text of {Cmd, EntryPoint, Env, Shell, User, Workdir}. */
  readonly EntrypointJSON: string;
  readonly Env: Readonly<Record<string, string>>;
  readonly LocalHostname: string;
  readonly ImageTag: string;
  readonly Machine: MachineMetadata;
  readonly Network: NetworkMetadata;
  /** By user name: {SSHKeys}. */
  readonly Users: Readonly<Record<string, { readonly SSHKeys: string }>>;
}

/** A node of the served tree: a string, or an object of nodes. */
export type MetadataNode = string | { readonly [key: string]: MetadataNode };

/** The whole tree a guest can walk: {"latest":{"meta-data": document}}. */
export function metadataTree(document: MetadataDocument): MetadataNode {
  return { latest: { 'meta-data': document as unknown as MetadataNode } };
}

/** The node at `path` ("latest/meta-data/Env", leading and trailing '/' ignored); undefined when there is none. */
export function nodeAt(tree: MetadataNode, path: string): MetadataNode | undefined {
  let node: MetadataNode | undefined = tree;
  for (const segment of path.split('/').filter((part) => part !== '')) {
    if (typeof node !== 'object' || !Object.hasOwn(node, segment)) return undefined;
    node = node[segment];
  }
  return node;
}

/**
 * Firecracker's plain-text form: a string is itself; an object lists its
 * keys one a line, in order, an object's key with a trailing '/'.
 */
export function plainText(node: MetadataNode): string {
  if (typeof node === 'string') return node;
  return Object.entries(node)
    .map(([key, value]) => (typeof value === 'string' ? key : `${key}/`))
    .join('\n');
}
