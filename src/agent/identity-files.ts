// A node's identity directory, as `sigil enrol` writes it and `sigil agent`
// keeps it fresh:
//
//   cert.pem    the node certificate, then its intermediates (not the root)
//   key.pem     the node's private key (PKCS#8, mode 0600)
//   bundle.pem  the trust bundle: every root, then every current intermediate
//   node.json   { nodeId, state, addresses, rootFingerprint, trustDomain, … }
//
// Every file is replaced atomically (written beside its target, fsynced,
// renamed), so a reader never sees half a file. A set of files is renamed
// into place key first and certificate last; readers that watch the directory
// (the transport's file source) re-read and validate the whole set anyway.

import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { invalid, notFound } from '../errors.ts';
import {
  type PlannedFile,
  PRIVATE,
  PUBLIC,
  parseJsonObject,
  writeFilesAtomically,
} from '../files/file-sets.ts';
import type { TlsMaterial } from '../pki/material.ts';

export const CERTIFICATE_FILE = 'cert.pem';
export const KEY_FILE = 'key.pem';
export const BUNDLE_FILE = 'bundle.pem';
export const NODE_FILE = 'node.json';

export type EnrolledState = 'NEW' | 'UP' | 'REVOKED';

/** node.json: what the agent needs besides the PEM files. Public facts only. */
export interface NodeInfo {
  readonly nodeId: string;
  /** The state last reported by the server. */
  readonly state: EnrolledState;
  readonly name: string | null;
  /** The control plane's addresses (HOST:PORT), from the join token. */
  readonly addresses: readonly string[];
  /** SHA-256 of the root CA the node was pinned to at enrolment, lower-case hex. */
  readonly rootFingerprint: string;
  readonly trustDomain: string;
  /** The node certificate's SPIFFE ID; null while NEW. */
  readonly spiffeId: string | null;
}

export interface IdentityPaths {
  readonly certificate: string;
  readonly key: string;
  readonly bundle: string;
  readonly node: string;
}

export function identityPaths(dir: string): IdentityPaths {
  return {
    certificate: join(dir, CERTIFICATE_FILE),
    key: join(dir, KEY_FILE),
    bundle: join(dir, BUNDLE_FILE),
    node: join(dir, NODE_FILE),
  };
}

function readText(path: string, what: string): string {
  try {
    if (statSync(path).isDirectory()) throw invalid(`${what} ${path} is a directory`);
    return readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw notFound(`${what} ${path} does not exist`, error);
    if (code === 'EACCES') throw invalid(`${what} ${path} is not readable (permission denied)`, error);
    throw error;
  }
}

/** The text of a file, or undefined when it does not exist. */
export function readOptional(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

function stringField(value: Record<string, unknown>, name: string, path: string): string {
  const field = value[name];
  if (typeof field !== 'string' || field === '')
    throw invalid(`${path}: "${name}" is missing or not a string`);
  return field;
}

/** Parses node.json, refusing anything that is not the shape sigil writes. */
export function parseNodeInfo(text: string, path: string): NodeInfo {
  const record = parseJsonObject(text, path);
  const state = stringField(record, 'state', path);
  if (state !== 'NEW' && state !== 'UP' && state !== 'REVOKED') {
    throw invalid(`${path}: unknown state ${JSON.stringify(state)}`);
  }
  const addresses = record.addresses;
  if (
    !Array.isArray(addresses) ||
    addresses.length === 0 ||
    !addresses.every((a): a is string => typeof a === 'string' && a !== '')
  ) {
    throw invalid(`${path}: "addresses" must be a non-empty list of HOST:PORT strings`);
  }
  const name = record.name;
  const spiffeId = record.spiffeId;
  return {
    nodeId: stringField(record, 'nodeId', path),
    state,
    name: typeof name === 'string' ? name : null,
    addresses,
    rootFingerprint: stringField(record, 'rootFingerprint', path),
    trustDomain: stringField(record, 'trustDomain', path),
    spiffeId: typeof spiffeId === 'string' ? spiffeId : null,
  };
}

export function readNodeInfo(dir: string): NodeInfo {
  const path = identityPaths(dir).node;
  return parseNodeInfo(readText(path, 'node file'), path);
}

/** An enrolled identity: the TLS material and node.json. */
export interface IdentityFiles {
  readonly material: TlsMaterial;
  readonly info: NodeInfo;
}

/**
 * Reads cert.pem, key.pem, bundle.pem and node.json. Refuses a directory whose
 * node is not UP (enrolment is still pending, or the node was revoked).
 * Validating the material (key matches, not expired) is the caller's job.
 */
export function readIdentity(dir: string): IdentityFiles {
  const paths = identityPaths(dir);
  const info = readNodeInfo(dir);
  if (info.state === 'NEW') {
    throw invalid(
      `node ${info.nodeId} in ${dir} is waiting for approval (sigil node approve ${info.nodeId}); ` +
        'run sigil enrol again (or with --wait) once it is approved',
    );
  }
  if (info.state === 'REVOKED') throw invalid(`node ${info.nodeId} in ${dir} was revoked`);
  return {
    info,
    material: {
      certificateChain: readText(paths.certificate, 'certificate file'),
      privateKey: readText(paths.key, 'key file'),
      trustBundle: readText(paths.bundle, 'trust bundle file'),
    },
  };
}

export interface IdentityUpdate {
  readonly privateKey?: string;
  readonly certificateChain?: string;
  readonly trustBundle?: string;
  readonly info?: NodeInfo;
}

export function nodeInfoJson(info: NodeInfo): string {
  return `${JSON.stringify(info, null, 2)}\n`;
}

/**
 * Replaces the given files in `dir` (which must exist), each atomically,
 * key first and certificate last. Files whose content would not change are
 * left alone. Returns the paths written.
 */
export function writeIdentity(dir: string, update: IdentityUpdate): string[] {
  const paths = identityPaths(dir);
  const planned: PlannedFile[] = [];
  const plan = (path: string, contents: string | undefined, mode: number) => {
    if (contents === undefined || readOptional(path) === contents) return;
    planned.push({ path, contents, mode, replaces: true });
  };
  plan(paths.key, update.privateKey, PRIVATE);
  plan(paths.bundle, update.trustBundle, PUBLIC);
  plan(paths.node, update.info === undefined ? undefined : nodeInfoJson(update.info), PUBLIC);
  plan(paths.certificate, update.certificateChain, PUBLIC);
  if (planned.length > 0) writeFilesAtomically(planned);
  return planned.map((file) => file.path);
}
