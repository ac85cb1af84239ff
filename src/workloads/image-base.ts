// A Debian base image made on the node with mmdebstrap (`sigil image base
// debian:bookworm`), stored exactly as `sigil image import` stores a tar:
// mmdebstrap writes a tar without /dev (--skip=output/dev: the store gives
// every image its own standard device nodes and refuses any others), and
// importImage lists, checks and extracts it like any other tar.
//
// The default variant is minbase: the Essential:yes packages and those of
// priority required, apt among them; about what Docker's debian images hold,
// so a Dockerfile's `RUN apt-get install` works on it. `essential` leaves out
// apt and its libraries (about a fifth smaller, a quarter faster to make
// here); both give /bin/sh (dash).
//
// mmdebstrap copies the host's /etc/hostname and /etc/resolv.conf in for
// apt's sake; a customize hook removes both, as Docker's images have neither
// (vminit writes /etc/hostname in a guest; nothing gives a workload a
// resolv.conf yet).
//
// The tar is written in a `.import-` directory inside the store, so one cut
// short by a crash is removed by the next openImageStore. mmdebstrap's own
// chroot stays in its TMPDIR (the system's): it mounts /proc and /sys in
// it, which no recursive removal of ours should ever walk into.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { alreadyExists, firstLineOf, invalid, preconditionFailed, SigilError } from '../errors.ts';
import { parseImageReference } from '../protocol/image-names.ts';
import type { ImageRecord, ImageStore } from './images.ts';

export const MMDEBSTRAP = '/usr/bin/mmdebstrap';

/** mmdebstrap's variants that give a usable /bin/sh, smallest first. */
export const BASE_VARIANTS = ['essential', 'minbase', 'required', 'important', 'standard'] as const;
export type BaseVariant = (typeof BASE_VARIANTS)[number];
export const DEFAULT_BASE_VARIANT: BaseVariant = 'minbase';

/**
 * Debian suites deb.debian.org serves and the host's debian-archive-keyring
 * can check: codenames and their moving aliases. Older ones live on
 * archive.debian.org, which mmdebstrap does not pick by itself.
 */
export const DEBIAN_SUITES: readonly string[] = [
  'bullseye',
  'bookworm',
  'trixie',
  'forky',
  'sid',
  'oldstable',
  'stable',
  'testing',
  'unstable',
];

/** Lines mmdebstrap prints are kept this long at most in an error message. */
const MAX_ERROR_LINE = 240;
/** Where the tar waits for its import, in the store: a crash leaves what openImageStore removes. */
const STAGING_PREFIX = '.import-base-';

/** The same environment whoever runs the command (no TAR_OPTIONS or APT_CONFIG of the caller's), but its proxy. */
function mmdebstrapEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    LC_ALL: 'C',
  };
  for (const name of ['http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY']) {
    if (process.env[name] !== undefined) env[name] = process.env[name];
  }
  return env;
}

export interface BaseSource {
  readonly distribution: 'debian';
  readonly suite: string;
}

/** `debian:SUITE`, refusing (invalid_argument) anything else with the reason. */
export function parseBaseSource(text: string): BaseSource {
  const match = /^([a-z]+):(.*)$/.exec(text.trim());
  if (!match) throw invalid(`base ${JSON.stringify(text)}: expected debian:SUITE, as in debian:bookworm`);
  const [, distribution, suite] = match;
  if (distribution !== 'debian') {
    throw invalid(`base ${JSON.stringify(text)}: only debian:SUITE bases are made (mmdebstrap)`);
  }
  if (!DEBIAN_SUITES.includes(suite)) {
    throw invalid(
      `base ${JSON.stringify(text)}: unknown Debian suite ${JSON.stringify(suite)} (known: ${DEBIAN_SUITES.join(', ')})`,
    );
  }
  return { distribution: 'debian', suite };
}

/** `debian/SUITE:YYYYMMDD` (UTC), with `-VARIANT` after the date for any but the default variant. */
export function defaultBaseTag(source: BaseSource, variant: BaseVariant, now: Date = new Date()): string {
  const date = now.toISOString().slice(0, 10).replaceAll('-', '');
  const suffix = variant === DEFAULT_BASE_VARIANT ? '' : `-${variant}`;
  return `${source.distribution}/${source.suite}:${date}${suffix}`;
}

export interface BaseImageOptions {
  /** `debian:SUITE` */
  readonly source: string;
  /** `org/name:version`; defaultBaseTag when absent. */
  readonly tag?: string;
  readonly variant?: BaseVariant;
  /** Each line mmdebstrap prints (its progress), as it comes. */
  readonly onProgress?: (line: string) => void;
  /** The mmdebstrap program; MMDEBSTRAP by default. */
  readonly mmdebstrap?: string;
}

export interface BaseImage {
  readonly record: ImageRecord;
  readonly variant: BaseVariant;
  readonly suite: string;
  /** Wall time of mmdebstrap and the import together. */
  readonly durationMs: number;
}

/**
 * Makes a Debian base image with mmdebstrap and imports it into `store`.
 * Refused before anything runs: a bad source or tag, a tag the store has, not
 * root, mmdebstrap missing. A failed run leaves nothing in the store.
 */
export async function buildBaseImage(store: ImageStore, options: BaseImageOptions): Promise<BaseImage> {
  const started = Date.now();
  const source = parseBaseSource(options.source);
  const variant = options.variant ?? DEFAULT_BASE_VARIANT;
  if (!BASE_VARIANTS.includes(variant)) {
    throw invalid(`base variant ${JSON.stringify(variant)}: expected one of ${BASE_VARIANTS.join(', ')}`);
  }
  const { reference } = parseImageReference(options.tag ?? defaultBaseTag(source, variant));
  const { importImage, listImages } = await import('./images.ts');
  if (listImages(store).some((record) => record.tag === reference)) {
    throw alreadyExists(`image ${reference}: already on this node; remove it first`);
  }
  if (process.getuid?.() !== 0) {
    throw preconditionFailed(
      'making a base image needs root (mmdebstrap --mode=root, files owned as in Debian)',
    );
  }
  const program = options.mmdebstrap ?? MMDEBSTRAP;
  if (!existsSync(program)) {
    throw preconditionFailed(`${program} is missing: apt-get install mmdebstrap`);
  }

  const staging = await mkdtemp(join(store.dir, STAGING_PREFIX));
  try {
    const tar = join(staging, 'rootfs.tar');
    await runMmdebstrap(program, source, variant, tar, options.onProgress);
    const record = await importImage(store, tar, reference);
    return { record, variant, suite: source.suite, durationMs: Date.now() - started };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** Runs mmdebstrap to `tar`; its lines go to `onProgress`, and its first error line into the thrown error. */
async function runMmdebstrap(
  program: string,
  source: BaseSource,
  variant: BaseVariant,
  tar: string,
  onProgress: ((line: string) => void) | undefined,
): Promise<void> {
  const args = [
    '--mode=root',
    `--variant=${variant}`,
    '--format=tar',
    '--skip=output/dev',
    // mmdebstrap copies these from the host for apt's sake; an image keeps nothing of the host that made it.
    '--customize-hook=rm -f "$1/etc/hostname" "$1/etc/resolv.conf"',
    source.suite,
    tar,
  ];
  const child = spawn(program, args, { env: mmdebstrapEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const ended = new Promise<number | null>((resolveEnd, rejectEnd) => {
    child.once('error', rejectEnd);
    child.once('close', (code) => resolveEnd(code));
  });
  let firstError: string | undefined;
  const read = async (stream: NodeJS.ReadableStream): Promise<void> => {
    for await (const line of createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY })) {
      if (firstError === undefined && line.startsWith('E: ')) firstError = line.slice(3);
      onProgress?.(line);
    }
  };
  const [code] = await Promise.all([
    ended.catch((error: unknown) => {
      throw preconditionFailed(`cannot run ${program}: ${firstLineOf(error)}`);
    }),
    read(child.stdout),
    read(child.stderr),
  ]);
  if (code !== 0) {
    const why = firstError ?? `exit code ${code}`;
    throw new SigilError(
      'failed_precondition',
      `mmdebstrap could not make debian:${source.suite}: ${why.length > MAX_ERROR_LINE ? `${why.slice(0, MAX_ERROR_LINE)}…` : why}`,
    );
  }
}
