// sigil.v1.CertificateAuthority: message → authority call → message. Every
// decision (who may sign, renew or revoke what) is the authority's; this
// layer checks field sizes, derives the caller from the verified client
// certificate and converts.
//
// Sign and Renew run behind admission control (admission.ts): a bounded
// number at once and a bounded queue; beyond that RESOURCE_EXHAUSTED with a
// retry-after-ms trailer, before anything is done for the call.
//
// WatchRevocations sends the snapshot of every revoked, unexpired serial
// first, then one message per change, until the client cancels or the server
// shuts down (then the stream ends with OK and the client reconnects). How
// many such streams one peer may hold is the transport's limit
// (transport/peer-limits.ts).
import type * as grpc from '@grpc/grpc-js';
import type { Authority } from '../authority/authority.ts';
import { fieldError } from '../errors.ts';
import type {
  CertificateAuthorityServer,
  GetTrustBundleRequest,
  IssuedCertificate,
  ListCertificatesRequest,
  ListCertificatesResponse,
  RenewRequest,
  RevocationEvent,
  RevokeRequest,
  RevokeResponse,
  SignRequest,
  TrustBundle,
  WatchRevocationsRequest,
} from '../gen/sigil/v1/sigil.ts';
import { CertificateAuthorityService } from '../gen/sigil/v1/sigil.ts';
import { AdmissionControl } from './admission.ts';
import { admittedHandler } from './admission-handler.ts';
import { callerOf } from './caller.ts';
import { type DelegateGrants, requireGrant } from './delegate-grants.ts';
import { type FailureReporter, serverStreamHandler, unaryHandler } from './handlers.ts';
import { certificateSummaryMessage, issuedCertificateMessage, trustBundleMessage } from './messages.ts';
import { holdUntilReplied } from './self-revocation.ts';
import type { ServerMetrics } from './server-metrics.ts';
import {
  checkBytes,
  checkList,
  checkPageSize,
  checkPossession,
  checkSerial,
  checkText,
  checkTriState,
  MAX_COMMON_NAME_LENGTH,
  MAX_CSR_BYTES,
  MAX_DNS_NAME_LENGTH,
  MAX_IP_ADDRESS_LENGTH,
  MAX_PAGE_TOKEN_LENGTH,
  MAX_SHORT_TEXT,
  MAX_URI_LENGTH,
  withPossessionField,
} from './validation.ts';

export interface ServiceDependencies {
  readonly authority: Authority;
  readonly metrics?: ServerMetrics;
  /** Every failed call (log internal errors with their stack). */
  readonly onFailure?: FailureReporter;
  /** Admitted delegate chains; without it, delegates are refused wherever a grant is needed. */
  readonly delegateGrants?: DelegateGrants;
  /** Admission control of Sign and Renew, shared by both; default: DEFAULT_ADMISSION_LIMITS. */
  readonly admission?: AdmissionControl;
}

export interface CertificateAuthorityImplementation {
  readonly implementation: CertificateAuthorityServer;
  /** Ends every open WatchRevocations stream with OK (server shutdown). */
  closeWatchers(): void;
}

const paths = CertificateAuthorityService;

function checkSignRequest(request: SignRequest): void {
  if (!request.key) throw fieldError('key', 'give possession or csr');
  if (request.key.$case === 'possession') checkPossession('possession', request.key.value);
  else checkBytes('csr', request.key.value, MAX_CSR_BYTES, 1);
  checkText('profile', request.profile, 32, { required: true });
  checkText('common_name', request.commonName, MAX_COMMON_NAME_LENGTH);
  checkList('dns_names', request.dnsNames, MAX_DNS_NAME_LENGTH);
  checkList('ip_addresses', request.ipAddresses, MAX_IP_ADDRESS_LENGTH);
  checkList('uris', request.uris, MAX_URI_LENGTH);
}

export function certificateAuthorityService(deps: ServiceDependencies): CertificateAuthorityImplementation {
  const { authority, metrics, onFailure } = deps;
  const td = authority.trustDomain;
  const watchers = new Set<() => void>();
  const admission = deps.admission ?? new AdmissionControl();
  const admitted = { admission, metrics, onFailure };

  const implementation: CertificateAuthorityServer = {
    sign: admittedHandler(
      { ...admitted, name: 'sign', method: paths.sign.path },
      unaryHandler<SignRequest, IssuedCertificate>(
        { method: paths.sign.path, onFailure },
        async (request, call) => {
          const caller = callerOf(call, td);
          checkSignRequest(request);
          const key = request.key;
          const issued = await withPossessionField('possession', () =>
            authority.sign(caller, {
              ...(key?.$case === 'possession' ? { possession: key.value } : {}),
              ...(key?.$case === 'csr' ? { csr: key.value } : {}),
              profile: request.profile,
              commonName: request.commonName,
              dnsNames: request.dnsNames,
              ipAddresses: request.ipAddresses,
              uris: request.uris,
              ttlSeconds: request.ttlSeconds,
            }),
          );
          return issuedCertificateMessage(issued);
        },
      ),
    ),

    renew: admittedHandler(
      { ...admitted, name: 'renew', method: paths.renew.path },
      unaryHandler<RenewRequest, IssuedCertificate>(
        { method: paths.renew.path, onFailure },
        async (request, call) => {
          const caller = callerOf(call, td);
          const possession = request.possession
            ? checkPossession('possession', request.possession)
            : undefined;
          const issued = await withPossessionField('possession', () =>
            authority.renew(caller, possession ? { possession } : {}),
          );
          return issuedCertificateMessage(issued);
        },
      ),
    ),

    revoke: unaryHandler<RevokeRequest, RevokeResponse>(
      { method: paths.revoke.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        const serial = checkSerial('serial', request.serial);
        checkText('reason', request.reason, MAX_SHORT_TEXT);
        // Revoking the caller's own certificate must not cut the connection before this reply.
        holdUntilReplied(call);
        const result = await authority.revoke(
          caller,
          serial,
          request.reason === '' ? undefined : request.reason,
        );
        return { alreadyRevoked: result.alreadyRevoked };
      },
    ),

    getTrustBundle: unaryHandler<GetTrustBundleRequest, TrustBundle>(
      { method: paths.getTrustBundle.path, onFailure },
      async (_request, call) => {
        callerOf(call, td); // authenticated peers only on this service
        return trustBundleMessage(authority.trustBundle());
      },
    ),

    watchRevocations: serverStreamHandler<WatchRevocationsRequest, RevocationEvent>(
      { method: paths.watchRevocations.path, onFailure },
      async (call: grpc.ServerWritableStream<WatchRevocationsRequest, RevocationEvent>) => {
        const caller = callerOf(call, td);
        const grant = caller.role === 'delegate' ? await requireGrant(deps, call) : undefined;
        let open = true;
        let unsubscribe: (() => void) | null = null;
        const finish = (): void => {
          if (!open) return;
          open = false;
          watchers.delete(end);
          unsubscribe?.();
          metrics?.watcherClosed();
        };
        // Server shutdown: end with OK so the client reconnects to another replica.
        const end = (): void => {
          const wasOpen = open;
          finish();
          if (wasOpen && !call.cancelled) call.end();
        };
        watchers.add(end);
        metrics?.watcherOpened();
        call.on('cancelled', finish);
        call.on('close', finish);
        call.on('error', finish);
        // The snapshot is delivered synchronously, before watchRevocations returns.
        unsubscribe = authority.watchRevocations((update) => {
          if (!open || call.cancelled) return;
          call.write({ snapshot: update.snapshot, serials: [...update.serials] });
        }, grant);
        if (!open) unsubscribe();
      },
    ),

    listCertificates: unaryHandler<ListCertificatesRequest, ListCertificatesResponse>(
      { method: paths.listCertificates.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        const pageSize = checkPageSize('page_size', request.pageSize);
        checkText('page_token', request.pageToken, MAX_PAGE_TOKEN_LENGTH);
        checkText('requester', request.requester, MAX_URI_LENGTH);
        checkText('profile', request.profile, 32);
        const revoked = checkTriState('revoked', request.revoked);
        const page = await authority.listCertificates(caller, {
          ...(pageSize !== undefined ? { pageSize } : {}),
          ...(request.pageToken ? { pageToken: request.pageToken } : {}),
          ...(request.requester ? { requester: request.requester } : {}),
          ...(request.profile ? { profile: request.profile } : {}),
          ...(revoked !== undefined ? { revoked } : {}),
        });
        return {
          certificates: page.items.map(certificateSummaryMessage),
          nextPageToken: page.nextPageToken,
        };
      },
    ),
  };

  return {
    implementation,
    closeWatchers: () => {
      for (const end of [...watchers]) end();
    },
  };
}
