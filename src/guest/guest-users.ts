// A Dockerfile user ("uid[:gid]", or names as USER and --chown take them) as
// numeric ids, names looked up in the guest's own /etc/passwd and /etc/group
// (not the host's: the build runs as the image's users).
import { readFile } from 'node:fs/promises';
import { invalid, notFound } from '../errors.ts';
import { resolveInGuest } from './guest-paths.ts';

export interface GuestUser {
  readonly uid: number;
  readonly gid: number;
  /** From /etc/passwd when the user has an entry there. */
  readonly home?: string;
}

/** The ids Linux can give a process or a file: 0 to 2^32-2 (2^32-1 is "no change"). */
const MAX_ID = 0xfffffffe;
const NUMERIC = /^[0-9]{1,10}$/;

/** firebuild's default user, for which ADD/COPY change no ownership. */
export const ROOT_USER = '0:0';

interface DatabaseEntry {
  readonly name: string;
  readonly id: number;
  readonly gid: number;
  readonly home: string;
}

async function readDatabase(root: string, file: '/etc/passwd' | '/etc/group'): Promise<DatabaseEntry[]> {
  let text: string;
  try {
    text = await readFile(await resolveInGuest(root, file), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const entries: DatabaseEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields.length < 3 || !NUMERIC.test(fields[2])) continue;
    entries.push({
      name: fields[0],
      id: Number(fields[2]),
      gid: file === '/etc/passwd' && NUMERIC.test(fields[3] ?? '') ? Number(fields[3]) : -1,
      home: file === '/etc/passwd' ? (fields[5] ?? '') : '',
    });
  }
  return entries;
}

function numericId(text: string, spec: string): number {
  const value = Number(text);
  if (value > MAX_ID) throw invalid(`user ${JSON.stringify(spec)}: ${text} is not a valid id`);
  return value;
}

/**
 * `spec` ("uid", "uid:gid", "name", "name:group") in the guest under `root`.
 * Without a group: the user's primary group from /etc/passwd, else
 * `defaultGid(uid)` (0 for RUN as Docker does; the uid for --chown).
 */
export async function resolveGuestUser(
  root: string,
  spec: string,
  defaultGid: (uid: number) => number = () => 0,
): Promise<GuestUser> {
  const parts = spec.split(':');
  if (parts.length > 2 || parts[0] === '' || parts[1] === '')
    throw invalid(`user ${JSON.stringify(spec)}: expected user[:group]`);
  const [userPart, groupPart] = parts;
  const passwd = await readDatabase(root, '/etc/passwd');
  let entry: DatabaseEntry | undefined;
  let uid: number;
  if (NUMERIC.test(userPart)) {
    uid = numericId(userPart, spec);
    entry = passwd.find((candidate) => candidate.id === uid);
  } else {
    entry = passwd.find((candidate) => candidate.name === userPart);
    if (entry === undefined)
      throw notFound(`user ${JSON.stringify(userPart)} is not in the guest's /etc/passwd`);
    uid = entry.id;
  }
  let gid: number;
  if (groupPart === undefined) gid = entry !== undefined && entry.gid >= 0 ? entry.gid : defaultGid(uid);
  else if (NUMERIC.test(groupPart)) gid = numericId(groupPart, spec);
  else {
    const group = (await readDatabase(root, '/etc/group')).find((candidate) => candidate.name === groupPart);
    if (group === undefined)
      throw notFound(`group ${JSON.stringify(groupPart)} is not in the guest's /etc/group`);
    gid = group.id;
  }
  return entry?.home ? { uid, gid, home: entry.home } : { uid, gid };
}
