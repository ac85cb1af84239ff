// `sigil server --join TOKEN`: a new replica on a shared PostgreSQL store
// obtains its own intermediate CA. Its key is generated here and never
// leaves the process (only its public half goes out, with a proof of
// possession bound to the token and the replica ID); the replica holding the
// root key signs it (Enrolment.JoinReplica). The server is authenticated by
// pinning the root fingerprint the token carries, as a node's enrolment does.
// joinIfAsked() decides at start-up whether a --join is needed at all.
import type { KeyObject } from 'node:crypto';
import type { JoinMaterial } from '../authority/bootstrap.ts';
import {
  controlPlaneVerification,
  enrolmentCredentials,
  fetchPinnedRoot,
} from '../client/control-plane-channel.ts';
import { unary } from '../client/rpc.ts';
import { invalid, preconditionFailed, SigilError } from '../errors.ts';
import { EnrolmentClient } from '../gen/sigil/v1/sigil.ts';
import type { Logger } from '../logging.ts';
import { generateKeyPair } from '../pki/keys.ts';
import { possessionFor, replicaChallenge } from '../protocol/challenges.ts';
import { parseJoinToken, tokenKindOf } from '../protocol/join-tokens.ts';
import type { StoreKind } from '../store/open-store.ts';
import type { Store } from '../store/store.ts';

export interface ReplicaJoinOptions {
  readonly token: string;
  readonly replicaId: string;
  readonly timeoutMs?: number;
  /** Progress lines (which address is being tried). */
  readonly onProgress?: (message: string) => void;
}

/** Calls JoinReplica on the token's addresses in turn; resolves with the signed intermediate and its key. */
export async function joinReplica(options: ReplicaJoinOptions): Promise<JoinMaterial> {
  const token = parseJoinToken(options.token);
  if (tokenKindOf(token.id) !== 'replica') {
    throw invalid(
      '--join needs a replica join token (sigil token create --replica); this is a node join token',
    );
  }
  const privateKey: KeyObject = generateKeyPair('p256').privateKey;
  const possession = possessionFor(privateKey, replicaChallenge(token.id, token.secret, options.replicaId));
  const failures: string[] = [];
  for (const address of token.addresses) {
    options.onProgress?.(`joining through ${address}`);
    let client: EnrolmentClient | null = null;
    try {
      const root = await fetchPinnedRoot(address, token.rootFingerprint, { timeoutMs: options.timeoutMs });
      const channel = enrolmentCredentials({
        roots: [root],
        verify: controlPlaneVerification(token.rootFingerprint),
      });
      client = new EnrolmentClient(address, channel);
      const response = await unary(
        client,
        client.joinReplica,
        { tokenId: token.id, tokenSecret: token.secret, possession, replicaId: options.replicaId },
        { target: address, timeoutMs: options.timeoutMs },
      );
      if (!response.intermediate || response.intermediate.certificate.length === 0) {
        throw new SigilError(
          'internal',
          `the server at ${address} answered JoinReplica without an intermediate`,
        );
      }
      return { intermediate: Buffer.from(response.intermediate.certificate), privateKey };
    } catch (error) {
      // A refusal from a reachable server is final; an unreachable one lets us try the next address.
      if (error instanceof SigilError && error.code !== 'internal') throw error;
      failures.push(`${address}: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      client?.close();
    }
  }
  throw new SigilError(
    'internal',
    `could not join through any address in the token (${failures.join('; ')})`,
  );
}

/**
 * `--join TOKEN` at start-up: the intermediate to adopt, or undefined when
 * no token is given or this replica already has its intermediate in the
 * store. Refused before the token is spent when the store is not the
 * deployment's shared one.
 */
export async function joinIfAsked(options: {
  readonly token: string | undefined;
  readonly store: Store;
  readonly storeKind: StoreKind;
  readonly replicaId: string;
  readonly log: Logger;
}): Promise<JoinMaterial | undefined> {
  const { token, replicaId, log } = options;
  if (token === undefined || token === '') return undefined;
  const cas = await options.store.listCas();
  // A join only makes sense on the deployment's own store.
  if (!cas.some((ca) => ca.kind === 'root')) {
    throw preconditionFailed(
      options.storeKind === 'sqlite'
        ? "--join needs the deployment's shared PostgreSQL store (--store postgres://…); a SQLite store belongs to one replica"
        : '--join: this store holds no CA yet; give the --store of the deployment you are joining',
    );
  }
  if (cas.some((ca) => ca.kind === 'intermediate' && ca.replicaId === replicaId)) {
    log.info(
      { replicaId },
      'this replica already has its intermediate CA in the store; --join is not needed',
    );
    return undefined;
  }
  log.info({ replicaId }, 'joining the deployment with a replica join token');
  return joinReplica({ token, replicaId, onProgress: (message) => log.info(message) });
}
