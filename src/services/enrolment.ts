// sigil.v1.Enrolment: the entry for nodes and replicas that have no
// certificate yet. These methods are public (callable without a client
// certificate, see authorization-rules.ts): the join token or the enrolled
// key is the credential, and the authority checks it. Nothing here looks at
// the caller's identity.
import type { Registration } from '../authority/authority.ts';
import type {
  EnrolmentServer,
  GetTrustBundleRequest,
  JoinReplicaRequest,
  JoinReplicaResponse,
  RegisterRequest,
  RegisterResponse,
  RejoinRequest,
  TrustBundle,
} from '../gen/sigil/v1/sigil.ts';
import { EnrolmentService } from '../gen/sigil/v1/sigil.ts';
import type { ServiceDependencies } from './certificate-authority.ts';
import { unaryHandler } from './handlers.ts';
import { issuedCertificateMessage, trustBundleMessage } from './messages.ts';
import {
  checkBytes,
  checkPossession,
  checkText,
  MAX_SHORT_TEXT,
  MAX_TOKEN_SECRET_BYTES,
  type PossessionFields,
  withPossessionField,
} from './validation.ts';

const paths = EnrolmentService;

function registerResponse(result: Registration): RegisterResponse {
  return {
    nodeId: result.node.id,
    state: result.node.state,
    ...(result.certificate ? { certificate: issuedCertificateMessage(result.certificate) } : {}),
  };
}

/** The join token and proof of possession that Register and JoinReplica both carry. */
function checkTokenProof(request: RegisterRequest | JoinReplicaRequest): PossessionFields {
  checkText('token_id', request.tokenId, MAX_SHORT_TEXT, { required: true });
  checkBytes('token_secret', request.tokenSecret, MAX_TOKEN_SECRET_BYTES, 1);
  return checkPossession('possession', request.possession);
}

export function enrolmentService(deps: ServiceDependencies): EnrolmentServer {
  const { authority, onFailure } = deps;
  return {
    register: unaryHandler<RegisterRequest, RegisterResponse>(
      { method: paths.register.path, onFailure },
      async (request) => {
        const possession = checkTokenProof(request);
        checkText('name', request.name, MAX_SHORT_TEXT);
        const result = await withPossessionField('possession', () =>
          authority.register({
            tokenId: request.tokenId,
            tokenSecret: request.tokenSecret,
            possession,
            ...(request.name ? { name: request.name } : {}),
          }),
        );
        return registerResponse(result);
      },
    ),

    rejoin: unaryHandler<RejoinRequest, RegisterResponse>(
      { method: paths.rejoin.path, onFailure },
      async (request) => {
        const possession = checkPossession('possession', request.possession);
        const result = await withPossessionField('possession', () => authority.rejoin({ possession }));
        return registerResponse(result);
      },
    ),

    getTrustBundle: unaryHandler<GetTrustBundleRequest, TrustBundle>(
      { method: paths.getTrustBundle.path, onFailure },
      async () => trustBundleMessage(authority.trustBundle()),
    ),

    joinReplica: unaryHandler<JoinReplicaRequest, JoinReplicaResponse>(
      { method: paths.joinReplica.path, onFailure },
      async (request) => {
        const possession = checkTokenProof(request);
        checkText('replica_id', request.replicaId, MAX_SHORT_TEXT, { required: true });
        const result = await withPossessionField('possession', () =>
          authority.joinReplica({
            tokenId: request.tokenId,
            tokenSecret: request.tokenSecret,
            possession,
            replicaId: request.replicaId,
          }),
        );
        return {
          intermediate: issuedCertificateMessage(result.intermediate),
          bundle: trustBundleMessage(result.bundle),
        };
      },
    ),
  };
}
