// `sigil image import|base|list|remove`: the root filesystem images workloads
// start from (base makes a Debian one with mmdebstrap, workloads/image-base.ts).
// Import, base and remove work on the node itself, on its directory
// (--dir NODE, as `sigil enrol` and `sigil agent` use it), as root: an image
// keeps its files' owners and gets /dev's device nodes (workloads/images.ts
// does the work and refuses unsafe content, leaving nothing behind). `list`
// reads the directory too, or asks a node's daemon with --node.
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type Command, Option } from 'commander';
import { notFound, preconditionFailed } from '../errors.ts';
import type { Image } from '../gen/sigil/v1/workloads.ts';
import {
  BASE_VARIANTS,
  type BaseVariant,
  buildBaseImage,
  DEFAULT_BASE_VARIANT,
  parseBaseSource,
} from '../workloads/image-base.ts';
import { examples } from './operator-output.ts';
import { printResult } from './output.ts';
import { usageError } from './usage.ts';
import { addNodeOptions } from './workload.ts';
import type { NodeFlags } from './workload-connection.ts';
import { parseTag, usageChecked } from './workload-flags.ts';

interface ImportFlags {
  tag: string;
  dir: string;
  json?: boolean;
}

interface ListFlags extends NodeFlags {
  dir?: string;
  json?: boolean;
}

interface BaseFlags {
  dir: string;
  tag?: string;
  variant?: BaseVariant;
  json?: boolean;
}

interface RemoveFlags {
  dir: string;
  json?: boolean;
}

/** An image record as printed: not its path on the host. */

const SOURCE_NAMES = { directory: 'the directory', tar: 'the tar file', ext4: 'the ext4 image' } as const;
function imageJson(record: { tag: string; id: string; importedAt: string; bytes: number; entries: number }) {
  return {
    tag: record.tag,
    id: record.id,
    importedAt: record.importedAt,
    bytes: record.bytes,
    entries: record.entries,
  };
}

function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) {
    throw preconditionFailed(
      `sigil image ${what} must run as root on the node (images keep their files' owners and get /dev's device nodes)`,
    );
  }
}

/** The node directory must exist: an import never creates one by a typo. */
function nodeDirectory(dir: string): string {
  const path = resolve(dir);
  if (!existsSync(path))
    throw notFound(`node directory ${path} does not exist (give --dir NODE, the enrolled node's directory)`);
  if (!statSync(path).isDirectory()) throw notFound(`node directory ${path} is not a directory`);
  return path;
}

/** "12.3 MiB" */
function size(bytes: number): string {
  return bytes >= 1024 ** 2 ? `${(bytes / 1024 ** 2).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`;
}

async function runImport(source: string, flags: ImportFlags): Promise<void> {
  const tag = usageChecked(() => parseTag(flags.tag));
  requireRoot('import');
  const dir = nodeDirectory(flags.dir);
  const { importImage, openImageStore } = await import('../workloads/images.ts');
  const store = openImageStore(dir);
  // A big tree takes a while: say so on a terminal, one line kept up to date.
  const started = Date.now();
  const ticker = process.stderr.isTTY
    ? setInterval(() => {
        process.stderr.write(
          `\rimporting ${source} as ${tag}… ${Math.round((Date.now() - started) / 1000)}s`,
        );
      }, 1000)
    : undefined;
  let record: Awaited<ReturnType<typeof importImage>>;
  try {
    record = await importImage(store, source, tag);
  } finally {
    if (ticker !== undefined) {
      clearInterval(ticker);
      process.stderr.write('\r\x1b[K');
    }
  }
  printResult(
    flags,
    imageJson(record),
    () =>
      `imported ${record.tag} from ${SOURCE_NAMES[record.source]} ${source}: ${record.entries} entries, ${size(record.bytes)}`,
  );
}

async function runBase(source: string, flags: BaseFlags): Promise<void> {
  usageChecked(() => parseBaseSource(source));
  if (flags.tag !== undefined) usageChecked(() => parseTag(flags.tag!));
  requireRoot('base');
  const dir = nodeDirectory(flags.dir);
  const { openImageStore } = await import('../workloads/images.ts');
  // mmdebstrap's own lines ("I: downloading packages with apt...") are the progress.
  const made = await buildBaseImage(openImageStore(dir), {
    source,
    tag: flags.tag,
    variant: flags.variant,
    onProgress: (line) => process.stderr.write(`${line}\n`),
  });
  const { record } = made;
  printResult(
    flags,
    { ...imageJson(record), suite: made.suite, variant: made.variant, durationMs: made.durationMs },
    () =>
      `made ${record.tag} from debian:${made.suite} (${made.variant}): ${record.entries} entries, ${size(record.bytes)}, ${Math.round(made.durationMs / 1000)} s`,
  );
}

function imageTable(images: readonly { tag: string; importedAt: string; bytes: number }[]): string {
  if (images.length === 0) return 'no images';
  const rows = images.map((image) => [image.tag, size(image.bytes), image.importedAt]);
  const widths = [0, 1].map((i) => Math.max(i === 0 ? 3 : 4, ...rows.map((row) => row[i].length)));
  return [['TAG', 'SIZE', 'IMPORTED'], ...rows]
    .map((row) => `${row[0].padEnd(widths[0])}  ${row[1].padEnd(widths[1])}  ${row[2]}`)
    .join('\n');
}

async function runList(flags: ListFlags): Promise<void> {
  if ((flags.dir === undefined) === (flags.node === undefined)) {
    throw usageError('give --dir NODE (on the node) or --node N (ask its daemon), one of them');
  }
  if (flags.dir !== undefined) {
    const dir = nodeDirectory(flags.dir);
    const { listImages, openImageStore } = await import('../workloads/images.ts');
    const images = listImages(openImageStore(dir)).map(imageJson);
    printResult(flags, { images }, () => imageTable(images));
    return;
  }
  const { unary } = await import('../client/rpc.ts');
  const { withWorkloads } = await import('./workload-connection.ts');
  const { instant } = await import('./operator-output.ts');
  const response = await withWorkloads(flags, ({ client, target, context }) =>
    unary(client, client.listImages, {}, { target, timeoutMs: context.timeoutMs }),
  );
  const images: Image[] = response.images;
  printResult(flags, { images }, () =>
    imageTable(
      images.map((image) => ({
        tag: image.tag,
        bytes: image.bytes,
        importedAt: instant(image.importedAtUnixMs) ?? '-',
      })),
    ),
  );
}

/**
 * Whether a workload the node daemon keeps (its desired state, which it
 * starts again after a restart) uses an image: such an image stays. Read
 * only when the daemon has ever run here (never creates its database).
 */
async function desiredImages(dir: string): Promise<(tag: string) => boolean> {
  const { DESIRED_STATE_FILE, DesiredState } = await import('../workloads/desired-state.ts');
  if (!existsSync(join(dir, 'workloads', DESIRED_STATE_FILE))) return () => false;
  const desired = DesiredState.open(dir);
  try {
    const { workloads, unreadable } = desired.list();
    if (unreadable.length > 0) {
      throw preconditionFailed(
        `the node's desired state has ${unreadable.length} unreadable workload record(s); cannot tell whether an image is in use`,
      );
    }
    const used = new Set(workloads.map((workload) => workload.spec.image));
    return (tag) => used.has(tag);
  } finally {
    desired.close();
  }
}

async function runRemove(tagText: string, flags: RemoveFlags): Promise<void> {
  const tag = usageChecked(() => parseTag(tagText));
  requireRoot('remove');
  const dir = nodeDirectory(flags.dir);
  const { openImageStore, removeImage } = await import('../workloads/images.ts');
  await removeImage(openImageStore(dir), tag, await desiredImages(dir));
  printResult(flags, { tag, removed: true }, () => `removed image ${tag}`);
}

export function registerImageCommands(program: Command): void {
  const image = program
    .command('image')
    .description('Root filesystem images on a node, which workloads start from');

  image
    .command('import')
    .description(
      'Import a directory, a tar file (gzip, xz, bzip2 too) or an ext4 image file (mke2fs -d) as an image on this node; as root. ' +
        'Device nodes, links that leave the image and paths with ".." are refused, and a refused import leaves nothing',
    )
    .argument('<source>', 'a root filesystem directory, a tar file or an ext4 image file')
    .requiredOption('--tag <tag>', 'the name workloads use: org/name:version')
    .requiredOption('--dir <dir>', "the node's directory (as given to sigil enrol and sigil agent)")
    .option('--json', 'print the image as JSON')
    .addHelpText(
      'after',
      examples(
        '$ sudo sigil image import ./rootfs --tag demo/busybox:1 --dir ./node',
        '$ sudo sigil image import debian.tar.gz --tag org/debian:12 --dir /var/lib/sigil-node',
      ),
    )
    .action((source: string, flags: ImportFlags) => runImport(source, flags));

  image
    .command('base')
    .description(
      'Make a Debian base image on this node with mmdebstrap (apt-get install mmdebstrap) and store it as import does; as root. ' +
        `The tag defaults to debian/SUITE:YYYYMMDD (UTC), with -VARIANT after the date unless the variant is ${DEFAULT_BASE_VARIANT}`,
    )
    .argument('<source>', 'debian:SUITE, as in debian:bookworm')
    .requiredOption('--dir <dir>', "the node's directory (as given to sigil enrol and sigil agent)")
    .option('--tag <tag>', 'the name workloads use: org/name:version')
    .addOption(
      new Option(
        '--variant <variant>',
        'mmdebstrap variant: essential has no apt; minbase adds apt (what Docker debian images hold)',
      )
        .choices(BASE_VARIANTS)
        .default(DEFAULT_BASE_VARIANT),
    )
    .option('--json', 'print the image as JSON')
    .addHelpText(
      'after',
      examples(
        '$ sudo sigil image base debian:bookworm --dir ./node',
        '$ sudo sigil image base debian:trixie --variant essential --tag org/trixie:1 --dir ./node --json',
      ),
    )
    .action((source: string, flags: BaseFlags) => runBase(source, flags));

  addNodeOptions(
    image
      .command('list')
      .description(
        "List a node's images: from its directory (--dir, on the node) or from its daemon (--node)",
      )
      .option('--dir <dir>', "the node's directory")
      .option('--json', 'print JSON'),
    false,
  )
    .addHelpText(
      'after',
      examples(
        '$ sudo sigil image list --dir ./node',
        '$ sigil image list --node web-1 --identity ./alice --json',
      ),
    )
    .action((flags: ListFlags) => runList(flags));

  image
    .command('remove')
    .description('Remove an image from this node, unless a workload the daemon keeps uses it; as root')
    .argument('<tag>', 'the image: org/name:version')
    .requiredOption('--dir <dir>', "the node's directory")
    .option('--json', 'print JSON')
    .addHelpText('after', examples('$ sudo sigil image remove demo/busybox:1 --dir ./node'))
    .action((tag: string, flags: RemoveFlags) => runRemove(tag, flags));
}
