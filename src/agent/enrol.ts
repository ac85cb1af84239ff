// Enrolment, the node side of Monogon's register flow:
//
//   1. read the join token: server addresses, the root CA's fingerprint, the
//      token ID and secret;
//   2. reach the first address that answers, pinning the root by that
//      fingerprint (client/control-plane-channel.ts: no trust on first use), and fetch
//      the trust bundle over the now authenticated channel;
//   3. generate the node key (Ed25519 by default) — or reuse the one a
//      previous run left in the directory — and prove possession of it with
//      the Register challenge bound to this token;
//   4. Register. NEW: the node waits for `sigil node approve`; with `wait`
//      it polls (repeating Register is idempotent for the same key and
//      consumes nothing) with bounded backoff until it is UP. UP: write
//      cert.pem, key.pem, bundle.pem and node.json, each atomically.
//
// Nothing is written before the server accepted the token, so a refused
// token leaves the directory as it was. Re-running with the same directory is
// idempotent: the saved key is reused and the server answers with the
// existing node.

import type { KeyObject } from 'node:crypto';
import { mkdirSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { isUnreachable } from '../client/address-failover.ts';
import {
  controlPlaneVerification,
  enrolmentCredentials,
  fetchPinnedRoot,
} from '../client/control-plane-channel.ts';
import { DEFAULT_CALL_TIMEOUT_MS, unary } from '../client/rpc.ts';
import { bundlePem, chainPem } from '../client/trust-bundle.ts';
import { invalid, messageOf, preconditionFailed } from '../errors.ts';
import { EnrolmentClient, type RegisterResponse, type TrustBundle } from '../gen/sigil/v1/sigil.ts';
import { sha256Hex } from '../pki/fingerprint.ts';
import {
  describeKeyType,
  generateKeyPair,
  type KeyType,
  keyTypeOf,
  privateKeyToPem,
  readPrivateKey,
} from '../pki/keys.ts';
import type { TlsMaterial } from '../pki/material.ts';
import { possessionFor, registerChallenge } from '../protocol/challenges.ts';
import { parseJoinToken, tokenKindOf } from '../protocol/join-tokens.ts';
import { validateMaterial } from '../transport/validate-material.ts';
import {
  identityPaths,
  type NodeInfo,
  parseNodeInfo,
  readOptional,
  writeIdentity,
} from './identity-files.ts';

export interface EnrolOptions {
  /** The join token as `sigil token create` printed it. */
  readonly token: string;
  /** The identity directory; created (0700) when missing. */
  readonly dir: string;
  /** A name for listings; default: the token's name on the server. */
  readonly name?: string;
  /** Key type of a new key. Default Ed25519. */
  readonly keyType?: KeyType;
  /** Poll until the node is approved instead of returning NEW. */
  readonly wait?: boolean;
  /** Longest total wait with `wait`. Default 15 minutes. */
  readonly waitTimeoutMs?: number;
  /** First poll interval with `wait` (it doubles up to 15 s). Default 1 s. */
  readonly pollIntervalMs?: number;
  readonly callTimeoutMs?: number;
  /** Progress for a person watching (connection, waiting). */
  readonly onProgress?: (message: string) => void;
}

export interface EnrolResult {
  readonly nodeId: string;
  readonly state: 'NEW' | 'UP';
  readonly dir: string;
  /** The address that answered. */
  readonly server: string;
  readonly trustDomain: string;
  readonly rootFingerprint: string;
  readonly keyType: KeyType;
  /** True when the key came from an earlier run in the same directory. */
  readonly reusedKey: boolean;
  /** Present when UP. */
  readonly certificate: {
    readonly serial: string;
    readonly spiffeId: string;
    readonly notBefore: string;
    readonly notAfter: string;
  } | null;
  /** Files written by this run. */
  readonly files: readonly string[];
}

const MAX_POLL_MS = 15_000;
const DEFAULT_WAIT_MS = 15 * 60_000;

/** The key to enrol: the one an earlier run saved in `dir`, else a new one. */
function nodeKey(dir: string, keyType: KeyType | undefined): { key: KeyObject; reused: boolean } {
  const path = identityPaths(dir).key;
  const saved = readOptional(path);
  if (saved !== undefined) {
    const key = readPrivateKey(saved, { source: path });
    if (keyType !== undefined && keyTypeOf(key) !== keyType) {
      throw invalid(
        `${path} holds an ${describeKeyType(keyTypeOf(key))} key from an earlier enrolment, not ${describeKeyType(keyType)}; ` +
          'use another --dir for a new identity',
      );
    }
    return { key, reused: true };
  }
  return { key: generateKeyPair(keyType ?? 'ed25519').privateKey, reused: false };
}

function checkDirectory(dir: string): void {
  try {
    if (!statSync(dir).isDirectory()) throw invalid(`${dir} exists and is not a directory`);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
}

interface Connection {
  readonly client: EnrolmentClient;
  readonly target: string;
  readonly bundle: TrustBundle;
}

/**
 * The first address that answers as the pinned CA, and its trust bundle
 * (fetched again over the authenticated channel). Unreachable addresses and
 * servers that are not the pinned CA are skipped; when none works, the most
 * telling error is reported (a wrong CA before "unreachable").
 */
async function connect(
  addresses: readonly string[],
  fingerprint: string,
  timeoutMs: number,
  onProgress: (message: string) => void,
): Promise<Connection> {
  const errors: unknown[] = [];
  for (const target of addresses) {
    onProgress(`connecting to ${target} (CA pinned to ${fingerprint.slice(0, 16)}…)`);
    let client: EnrolmentClient | undefined;
    try {
      const root = await fetchPinnedRoot(target, fingerprint, { timeoutMs });
      client = new EnrolmentClient(
        target,
        enrolmentCredentials({ roots: [root], verify: controlPlaneVerification(fingerprint) }),
      );
      const bundle = await unary(client, client.getTrustBundle, {}, { target, timeoutMs });
      if (!bundle.roots.some((der) => sha256Hex(der) === fingerprint)) {
        throw preconditionFailed(`the trust bundle from ${target} does not contain the pinned root`);
      }
      return { client, target, bundle };
    } catch (error) {
      client?.close();
      errors.push(error);
    }
  }
  throw errors.find((error) => !isUnreachable(error)) ?? errors[errors.length - 1];
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function enrol(options: EnrolOptions): Promise<EnrolResult> {
  const token = parseJoinToken(options.token);
  if (tokenKindOf(token.id) === 'replica') {
    throw invalid('this is a replica join token: it admits a new server replica, not a node');
  }
  const dir = resolve(options.dir);
  checkDirectory(dir);
  const paths = identityPaths(dir);
  const existingInfo = readOptional(paths.node);
  const previous = existingInfo === undefined ? undefined : parseNodeInfo(existingInfo, paths.node);
  if (previous !== undefined && previous.rootFingerprint !== token.rootFingerprint) {
    throw invalid(
      `${dir} already holds the identity of node ${previous.nodeId} under another CA (${previous.rootFingerprint}); use another --dir`,
    );
  }
  const { key, reused } = nodeKey(dir, options.keyType);
  const keyPem = privateKeyToPem(key);
  const timeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  const onProgress = options.onProgress ?? (() => {});

  const { client, target, bundle } = await connect(
    token.addresses,
    token.rootFingerprint,
    timeoutMs,
    onProgress,
  );
  try {
    const trustBundle = bundlePem(bundle);
    const trustDomain = bundle.trustDomain;
    const register = () =>
      unary(
        client,
        client.register,
        {
          tokenId: token.id,
          tokenSecret: token.secret,
          possession: possessionFor(key, registerChallenge(token.id, token.secret)),
          name: options.name ?? '',
        },
        { target, timeoutMs },
      );
    let response: RegisterResponse = await register();
    const files: string[] = [];
    const save = (update: Parameters<typeof writeIdentity>[1]) => {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      files.push(...writeIdentity(dir, update));
    };
    const info = (state: NodeInfo['state'], spiffeId: string | null): NodeInfo => ({
      nodeId: response.nodeId,
      state,
      name: options.name ?? previous?.name ?? null,
      addresses: token.addresses,
      rootFingerprint: token.rootFingerprint,
      trustDomain,
      spiffeId,
    });
    const result = (state: EnrolResult['state'], certificate: EnrolResult['certificate']): EnrolResult => ({
      nodeId: response.nodeId,
      state,
      dir,
      server: target,
      trustDomain,
      rootFingerprint: token.rootFingerprint,
      keyType: keyTypeOf(key),
      reusedKey: reused,
      certificate,
      files: [...new Set(files)], // a key kept from the NEW step is written again when UP
    });

    if (response.state === 'NEW') {
      // Keep the key so that a later run (or --wait) registers the same node.
      save({ privateKey: keyPem, trustBundle, info: info('NEW', null) });
      if (options.wait) {
        const deadline = Date.now() + (options.waitTimeoutMs ?? DEFAULT_WAIT_MS);
        let interval = options.pollIntervalMs ?? 1000;
        onProgress(`node ${response.nodeId} is waiting for approval (sigil node approve ${response.nodeId})`);
        // Polls until the deadline itself: the last sleep is cut short so that
        // one more Register runs at the deadline, and only then does it give up.
        while (response.state === 'NEW') {
          const left = deadline - Date.now();
          if (left <= 0) {
            throw preconditionFailed(
              `node ${response.nodeId} is still waiting for approval (sigil node approve ${response.nodeId}); ` +
                'run sigil enrol again once it is approved',
            );
          }
          await sleep(Math.min(interval, left));
          interval = Math.min(interval * 2, MAX_POLL_MS);
          try {
            response = await register();
          } catch (error) {
            if (!isUnreachable(error)) throw error;
            onProgress(`polling ${target} failed, retrying: ${messageOf(error)}`);
          }
        }
      }
    }
    if (response.state === 'REVOKED') {
      throw preconditionFailed(`node ${response.nodeId} was revoked; enrol a new identity in another --dir`);
    }
    if (response.state === 'NEW') return result('NEW', null);
    if (response.state !== 'UP' || response.certificate === undefined) {
      throw preconditionFailed(
        `the server answered Register with state ${JSON.stringify(response.state)} and no certificate`,
      );
    }
    const issued = response.certificate;
    const material: TlsMaterial = { certificateChain: chainPem(issued), privateKey: keyPem, trustBundle };
    validateMaterial(material);
    save({
      privateKey: keyPem,
      trustBundle,
      certificateChain: material.certificateChain,
      info: info('UP', issued.spiffeId || null),
    });
    return result('UP', {
      serial: issued.serial,
      spiffeId: issued.spiffeId,
      notBefore: new Date(issued.notBeforeUnixMs).toISOString(),
      notAfter: new Date(issued.notAfterUnixMs).toISOString(),
    });
  } finally {
    client.close();
  }
}
