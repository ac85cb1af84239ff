// ADD and COPY inside the guest: what the bootstrap service streams for the
// command's Source, written where the command's Target says
// (firebuild-mmds bootstrap/resource_deployer.go). Nothing received is an
// error (the resource does not exist). A directory is created (parents 0755)
// with its mode and owner (one that already exists is left as it is); a file lands at WORKDIR joined with its target path, with
// parent directories 0755, its mode, and the owner --chown or USER names when
// that is not root.
//
// Target naming follows Docker rather than firebuild's basename comparison
// (which turns `COPY a.txt /etc/b.txt` into /etc/b.txt/a.txt): a single file
// goes into the target when the target ends with "/" (or "." / "..") or is
// an existing directory, and is the target otherwise. A file found inside a
// directory Source carries its own full target path (Target joined with its
// path below the directory) and is written there.
//
// Every guest path is resolved under `root` (guest-paths.ts): a target whose
// `..` leaves the guest, or a symlink in the guest that points out, is refused.
import { constants } from 'node:fs';
import { chmod, chown, mkdir, open, stat } from 'node:fs/promises';
import { dirname, posix } from 'node:path';
import { notFound, SigilError } from '../errors.ts';
import type { AddCommand } from './build-commands.ts';
import { guestPath, resolveInGuest } from './guest-paths.ts';
import { type GuestUser, ROOT_USER, resolveGuestUser } from './guest-users.ts';

import type { ReceivedResource } from './resource-chunks.ts';

export type { ReceivedResource };

export interface DeployOptions {
  /** The directory holding the guest's root (default "/"). */
  readonly root?: string;
}

export interface DeployResult {
  readonly files: number;
  readonly directories: number;
}

/** Permission bits only: Go's os.FileMode also carries type bits (ModeDir is 1<<31). */
const PERMISSION_BITS = 0o7777;
const PARENT_MODE = 0o755;

/** The owner ADD/COPY gives what it writes: --chown, else USER; null for root (left as created). */
export function ownerSpec(command: AddCommand): string | null {
  const spec = command.UserFromLocalChown?.Value || command.User.Value || ROOT_USER;
  return spec === ROOT_USER ? null : spec;
}

/** Whether `target` names a directory by its spelling alone. */
const namesDirectory = (target: string): boolean =>
  target.endsWith('/') ||
  target === '.' ||
  target === '..' ||
  target.endsWith('/.') ||
  target.endsWith('/..');

async function isDirectory(hostPath: string): Promise<boolean> {
  try {
    return (await stat(hostPath)).isDirectory();
  } catch {
    return false;
  }
}

/** Creates the missing directories of `guestDirectory` (each with `mode`); returns the host paths it created. */
async function makeDirectories(root: string, guestDirectory: string, mode: number): Promise<string[]> {
  const created: string[] = [];
  const segments = guestDirectory.split('/').filter((part) => part !== '');
  for (let depth = 1; depth <= segments.length; depth += 1) {
    // Resolved one level at a time, so a symlink met on the way is followed inside the guest;
    // what is missing below it holds no symlinks, so creating it all at once stays inside.
    const onHost = await resolveInGuest(root, `/${segments.slice(0, depth).join('/')}`);
    let first: string | undefined;
    try {
      first = await mkdir(onHost, { recursive: true, mode });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST' && code !== 'ENOTDIR') throw error;
      throw new SigilError('failed_precondition', `${JSON.stringify(guestDirectory)}: a file is in the way`);
    }
    if (first === undefined) {
      if (!(await isDirectory(onHost)))
        throw new SigilError(
          'failed_precondition',
          `${JSON.stringify(guestDirectory)}: a file is in the way`,
        );
      continue;
    }
    const chain: string[] = [];
    for (let at = onHost; at !== first && at !== dirname(at); at = dirname(at)) chain.unshift(at);
    chain.unshift(first);
    for (const path of chain) {
      await chmod(path, mode);
      created.push(path);
    }
  }
  return created;
}

async function ownAndMode(hostPath: string, owner: GuestUser | null, mode: number): Promise<void> {
  // chown first: it clears set-user-ID and set-group-ID bits that chmod then sets.
  if (owner !== null) await chown(hostPath, owner.uid, owner.gid);
  await chmod(hostPath, mode);
}

async function writeGuestFile(hostPath: string, data: Buffer, mode: number): Promise<void> {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
  const handle = await open(hostPath, flags, mode & 0o777);
  try {
    await handle.writeFile(data);
  } finally {
    await handle.close();
  }
}

/** Writes what `resources` brings for `command` into the guest. */
export async function deployResources(
  command: AddCommand,
  resources: AsyncIterable<ReceivedResource>,
  options: DeployOptions = {},
): Promise<DeployResult> {
  const root = options.root ?? '/';
  const spec = ownerSpec(command);
  const owner = spec === null ? null : await resolveGuestUser(root, spec, (uid) => uid);
  const workdir = guestPath(command.Workdir.Value || '/');
  let files = 0;
  let directories = 0;
  for await (const { header, data } of resources) {
    const mode = header.fileMode & PERMISSION_BITS;
    const target = guestPath(header.targetPath, workdir);
    if (header.isDir) {
      const created = await makeDirectories(root, target, PARENT_MODE);
      // The entry's directory takes its mode and owner when this created it; an existing one stays as it is,
      // and parents created on the way are root's 0755, as for files.
      const onHost = await resolveInGuest(root, target);
      if (created.at(-1) === onHost) await ownAndMode(onHost, owner, mode);
      directories += 1;
      continue;
    }
    // A file the Source names itself carries the Target as written; one found in a directory, its own path below it.
    const namedBySource = header.targetPath === command.Target;
    let destination = target;
    if (
      namedBySource &&
      (namesDirectory(header.targetPath) || (await isDirectory(await resolveInGuest(root, target))))
    )
      destination = guestPath(posix.basename(header.sourcePath), target);
    await makeDirectories(root, posix.dirname(destination), PARENT_MODE);
    const onHost = await resolveInGuest(root, destination);
    if (await isDirectory(onHost))
      throw new SigilError(
        'failed_precondition',
        `${JSON.stringify(destination)}: a directory is in the way`,
      );
    await writeGuestFile(onHost, data, mode);
    await ownAndMode(onHost, owner, mode);
    files += 1;
  }
  if (files + directories === 0) throw notFound(`nothing received for ${JSON.stringify(command.Source)}`);
  return { files, directories };
}
