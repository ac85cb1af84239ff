// sigil's public surface for programs that embed it: mutual TLS for grpc-js
// (embedded CA, server, rotating credentials, identity, authorization,
// revocation, metrics) and the node agent. The PKI core is `sigil/pki`.
export type { NodeAgentOptions } from './agent/agent.ts';
export { NodeAgent } from './agent/agent.ts';
export type { ErrorCode } from './errors.ts';
export { SigilError } from './errors.ts';
export type { MaterialSource, TlsMaterial } from './pki/material.ts';
export type { RevocationSource } from './pki/revocation-source.ts';
export type { MetricsServer, MetricsServerOptions } from './server/metrics-http.ts';
export { serveMetrics } from './server/metrics-http.ts';
export type {
  AuthorizationOptions,
  AuthorizationRule,
  AuthorizationRules,
  PermissionSource,
} from './transport/authorization.ts';
export { AuthorizationPolicy, authorizationInterceptor } from './transport/authorization.ts';
export type { ChainStrictnessOptions } from './transport/chain-strictness.ts';
export { checkChainStrictness } from './transport/chain-strictness.ts';
export type { ChannelCredentialsOptions } from './transport/client-credentials.ts';
export { channelCredentials } from './transport/client-credentials.ts';
export { CrlRevocationSource } from './transport/crl-revocation-source.ts';
export type { AdmittedDelegate, DelegateAdmitter } from './transport/delegate-admission.ts';
export { chainDelegateAdmitter } from './transport/delegate-admission.ts';
export type { EmbeddedCAOptions, IssuedLeaf } from './transport/embedded-ca.ts';
export { EmbeddedCA } from './transport/embedded-ca.ts';
export type { FileSourceOptions, MaterialFiles } from './transport/file-source.ts';
export { FileMaterialSource } from './transport/file-source.ts';
export { MaterialProvider } from './transport/material-provider.ts';
export type { TransportMetricsOptions } from './transport/metrics.ts';
export { TransportMetrics } from './transport/metrics.ts';
export type { HandshakeFailure, MtlsServerOptions } from './transport/mtls-server.ts';
export { MtlsServer } from './transport/mtls-server.ts';
export type { PeerIdentity } from './transport/peer-identity.ts';
export { peerIdentity } from './transport/peer-identity.ts';
export type { PeerLimitOptions } from './transport/peer-limits.ts';
export { DEFAULT_PEER_LIMITS } from './transport/peer-limits.ts';
export { RevocationSet } from './transport/revocation-set.ts';
export type {
  PresentedServer,
  ServerNameOptions,
  ServerVerification,
} from './transport/server-verification.ts';
export {
  verifyAll,
  verifyPinnedFingerprint,
  verifyServerName,
  verifySpiffeId,
} from './transport/server-verification.ts';
export { StaticMaterialSource } from './transport/static-source.ts';
export type { TlsAlert } from './transport/tls-alert.ts';
