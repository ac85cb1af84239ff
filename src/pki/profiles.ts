// What each kind of certificate may do. A profile fixes basicConstraints,
// keyUsage and extendedKeyUsage so callers cannot assemble a contradictory
// certificate (a CA with serverAuth, a leaf with keyCertSign).
import { invalid } from '../errors.ts';

export type Profile = 'root' | 'intermediate' | 'server' | 'client' | 'server+client';
export const PROFILES: readonly Profile[] = ['root', 'intermediate', 'server', 'client', 'server+client'];

export const KeyUsageBit = {
  digitalSignature: 0,
  keyEncipherment: 2,
  keyCertSign: 5,
  cRLSign: 6,
} as const;

export const ExtendedKeyUsage = {
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

export interface ProfileRules {
  readonly isCa: boolean;
  readonly extendedKeyUsages: readonly string[];
  readonly defaultTtlMs: number;
}

const hour = 3_600_000;
const day = 24 * hour;
const year = 365 * day;

export const profileRules: Record<Profile, ProfileRules> = {
  root: { isCa: true, extendedKeyUsages: [], defaultTtlMs: 10 * year },
  intermediate: { isCa: true, extendedKeyUsages: [], defaultTtlMs: 5 * year },
  server: { isCa: false, extendedKeyUsages: [ExtendedKeyUsage.serverAuth], defaultTtlMs: day },
  client: { isCa: false, extendedKeyUsages: [ExtendedKeyUsage.clientAuth], defaultTtlMs: day },
  'server+client': {
    isCa: false,
    extendedKeyUsages: [ExtendedKeyUsage.serverAuth, ExtendedKeyUsage.clientAuth],
    defaultTtlMs: day,
  },
};

/**
 * Key usage bits for a profile. RSA leaves also get keyEncipherment so
 * TLS 1.2 peers using RSA key transport still accept them; EC and Ed25519
 * keys can only sign.
 */
export function keyUsageBits(profile: Profile, rsaSubject: boolean): number[] {
  if (profileRules[profile].isCa) {
    return [KeyUsageBit.digitalSignature, KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign];
  }
  return rsaSubject
    ? [KeyUsageBit.digitalSignature, KeyUsageBit.keyEncipherment]
    : [KeyUsageBit.digitalSignature];
}

export function parseProfile(text: string): Profile {
  if ((PROFILES as readonly string[]).includes(text)) return text as Profile;
  throw invalid(`unknown profile "${text}" (expected one of ${PROFILES.join(', ')})`);
}
