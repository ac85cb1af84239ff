// What `sigil server` checks before it touches its data directory: every
// flag parsed, and both ports free (listen-check.ts). A bad flag or a busy
// port then changes nothing on disk.
import { resolve } from 'node:path';
import { firstLineOf, invalid } from '../errors.ts';
import { parsePolicyOid } from '../pki/policy-extension.ts';
import { type StoreKind, storeKind } from '../store/open-store.ts';
import { parseHttpAdvertise } from './crl-distribution.ts';
import { isLoopbackHost } from './http-listener.ts';
import {
  DEFAULT_HTTP_LISTEN,
  DEFAULT_LISTEN,
  type ListenAddress,
  parseListenAddress,
} from './listen-address.ts';
import { checkListenable } from './listen-check.ts';

/** The flags of a start that start-plan.ts checks (a subset of ServerOptions). */
export interface StartFlags {
  readonly dataDir: string;
  readonly listen?: string;
  readonly httpListen?: string;
  readonly httpAdvertise?: string;
  readonly store?: string;
  readonly policyOid?: string;
}

export interface StartPlan {
  /** Absolute. */
  readonly dataDir: string;
  readonly grpcListen: ListenAddress;
  readonly httpListen: ListenAddress;
  /** The --store value: "sqlite" or a postgres:// URL. */
  readonly storeSpec: string;
  readonly storeKind: StoreKind;
  /** --http-advertise, checked and without a trailing slash. */
  readonly httpAdvertise: string | undefined;
}

/** The checked flags; refuses a bad flag or a busy port before anything is created. */
export async function planStart(flags: StartFlags): Promise<StartPlan> {
  const grpcListen = parseListenAddress(flags.listen ?? DEFAULT_LISTEN, '--listen');
  const httpListen = parseListenAddress(flags.httpListen ?? DEFAULT_HTTP_LISTEN, '--http-listen');
  if (!isLoopbackHost(httpListen.host)) {
    throw invalid(
      `--http-listen ${JSON.stringify(flags.httpListen)}: the HTTP side is plain HTTP and binds loopback only (127.0.0.1, ::1 or localhost)`,
    );
  }
  const storeSpec = flags.store ?? 'sqlite';
  const kind = storeKind(storeSpec);
  if (flags.policyOid !== undefined) {
    try {
      parsePolicyOid(flags.policyOid);
    } catch (error) {
      throw invalid(`--policy-oid: ${firstLineOf(error)}`, error);
    }
  }
  const httpAdvertise =
    flags.httpAdvertise === undefined ? undefined : parseHttpAdvertise(flags.httpAdvertise);
  await checkListenable(grpcListen, '--listen');
  await checkListenable(httpListen, '--http-listen');
  return {
    dataDir: resolve(flags.dataDir),
    grpcListen,
    httpListen,
    storeSpec,
    storeKind: kind,
    httpAdvertise,
  };
}
