// `sigil block create|list|destroy|upload|download`: block devices on a
// node, counted against the caller's delegation (its blockMiB quota), which
// workloads mount with `sigil workload create --block NAME:/path`. Upload
// and download stream in chunks with backpressure, so a file of any size
// never sits in memory; a download goes to a temporary file beside FILE,
// renamed into place only once complete ("-": stdin or stdout).
import { createReadStream, createWriteStream, existsSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { Command } from 'commander';
import { alreadyExists, notFound } from '../errors.ts';
import type { BlockData, BlockDevice } from '../gen/sigil/v1/workloads.ts';
import { examples } from './operator-output.ts';
import { printResult, progress } from './output.ts';
import { addNodeOptions } from './workload.ts';
import type { NodeFlags } from './workload-connection.ts';
import { parseResourceName, parseSizeMiB, usageChecked } from './workload-flags.ts';

interface JsonFlags extends NodeFlags {
  json?: boolean;
}

interface CreateFlags extends JsonFlags {
  size?: string;
}

/** Bytes per upload message: well under gRPC's 4 MiB message limit. */
export const UPLOAD_CHUNK_BYTES = 256 * 1024;

const blockName = (text: string): string => usageChecked(() => parseResourceName(text, 'block device'));

async function connection() {
  const [{ unary }, { withWorkloads, received }] = await Promise.all([
    import('../client/rpc.ts'),
    import('./workload-connection.ts'),
  ]);
  return { unary, withWorkloads, received };
}

async function runCreate(nameText: string, flags: CreateFlags): Promise<void> {
  const name = blockName(nameText);
  const sizeMib = usageChecked(() => parseSizeMiB(flags.size ?? ''));
  const { unary, withWorkloads } = await connection();
  const block = await withWorkloads(flags, ({ client, target, context }) =>
    unary(client, client.createBlock, { name, sizeMib }, { target, timeoutMs: context.timeoutMs }),
  );
  printResult(flags, block, () => `created block device ${block.name}: ${block.sizeMib} MiB`);
}

async function runList(flags: JsonFlags): Promise<void> {
  const { unary, withWorkloads } = await connection();
  const { blockTable } = await import('./workload-output.ts');
  const response = await withWorkloads(flags, ({ client, target, context }) =>
    unary(client, client.listBlocks, {}, { target, timeoutMs: context.timeoutMs }),
  );
  printResult(flags, { blocks: response.blocks }, () => blockTable(response.blocks));
}

async function runDestroy(nameText: string, flags: JsonFlags): Promise<void> {
  const name = blockName(nameText);
  const { unary, withWorkloads } = await connection();
  await withWorkloads(flags, ({ client, target, context }) =>
    unary(client, client.destroyBlock, { name }, { target, timeoutMs: context.timeoutMs }),
  );
  printResult(flags, { name, destroyed: true }, () => `destroyed block device ${name}`);
}

async function runUpload(nameText: string, file: string, flags: JsonFlags): Promise<void> {
  const name = blockName(nameText);
  const { withWorkloads } = await connection();
  const { rpcError } = await import('../client/rpc.ts');
  const input: Readable =
    file === '-' ? process.stdin : createReadStream(file, { highWaterMark: UPLOAD_CHUNK_BYTES });
  // Open the file before connecting: a missing file is refused without touching the node.
  await new Promise<void>((resolve, reject) => {
    if (file === '-') return resolve();
    input.once('open', () => resolve());
    input.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'ENOENT' ? notFound(`upload source ${file} does not exist`) : error),
    );
  });
  let sent = 0;
  const block = await withWorkloads(flags, ({ client, target }) => {
    return new Promise<BlockDevice>((resolve, reject) => {
      const call = client.uploadBlock((error, response) => {
        if (error) reject(rpcError(error, target));
        else resolve(response);
      });
      call.write({ name, data: Buffer.alloc(0) });
      input.on('data', (chunk: Buffer | string) => {
        const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        sent += data.length;
        if (!call.write({ name: '', data })) {
          input.pause();
          call.once('drain', () => input.resume());
        }
      });
      input.once('end', () => call.end());
      input.once('error', (error) => {
        call.cancel();
        reject(error);
      });
    });
  });
  progress(`uploaded ${sent} bytes`);
  printResult(flags, block, () => `uploaded ${sent} bytes to block device ${block.name}`);
}

async function runDownload(nameText: string, file: string, flags: JsonFlags): Promise<void> {
  const name = blockName(nameText);
  if (file !== '-' && existsSync(file)) {
    throw alreadyExists(`${file} already exists; remove it or give another file name`);
  }
  const { withWorkloads, received } = await connection();
  const temporary =
    file === '-' ? undefined : join(dirname(file), `.${basename(file)}.${process.pid}.partial`);
  let written = 0;
  try {
    await withWorkloads(flags, async ({ client, target }) => {
      const output: Writable =
        temporary === undefined ? process.stdout : createWriteStream(temporary, { flags: 'wx' });
      const call = client.downloadBlock({ name });
      try {
        for await (const chunk of received<BlockData>(call, target)) {
          written += chunk.data.length;
          if (!output.write(chunk.data)) await new Promise((resolve) => output.once('drain', resolve));
        }
      } finally {
        if (temporary !== undefined)
          await new Promise<void>((resolve, reject) =>
            output.end((error?: Error | null) => (error ? reject(error) : resolve())),
          );
      }
    });
    if (temporary !== undefined) renameSync(temporary, file);
  } catch (error) {
    if (temporary !== undefined) rmSync(temporary, { force: true });
    throw error;
  }
  if (file !== '-')
    printResult(
      flags,
      { name, file, bytes: written },
      () => `downloaded ${written} bytes of block device ${name} to ${file}`,
    );
}

export function registerBlockCommands(program: Command): void {
  const block = program
    .command('block')
    .description("Block devices on a node, counted against the caller's delegation, mounted by workloads");

  addNodeOptions(
    block
      .command('create')
      .description("Create a block device of --size MiB (reserved against the delegation's block quota)")
      .argument('<name>', 'the block device name: one DNS label')
      .requiredOption('--size <MiB>', 'its size in MiB')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil block create data --size 512 --node web-1 --identity ./alice'))
    .action((name: string, flags: CreateFlags) => runCreate(name, flags));

  addNodeOptions(
    block
      .command('list')
      .description("List the caller's block devices on the node")
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil block list --node web-1'))
    .action((flags: JsonFlags) => runList(flags));

  addNodeOptions(
    block
      .command('destroy')
      .description('Destroy a block device (not while a workload mounts it) and release its reservation')
      .argument('<name>', 'the block device name')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil block destroy data --node web-1'))
    .action((name: string, flags: JsonFlags) => runDestroy(name, flags));

  addNodeOptions(
    block
      .command('upload')
      .description('Write FILE to a block device, streamed ("-": stdin)')
      .argument('<name>', 'the block device name')
      .argument('<file>', 'the file to send, or - for stdin')
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil block upload data ./data.ext4 --node web-1',
        '$ gzip -dc data.ext4.gz | sigil block upload data - --node web-1',
      ),
    )
    .action((name: string, file: string, flags: JsonFlags) => runUpload(name, file, flags));

  addNodeOptions(
    block
      .command('download')
      .description('Copy a block device into FILE, streamed ("-": stdout); FILE must not exist')
      .argument('<name>', 'the block device name')
      .argument('<file>', 'where to write it, or - for stdout')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil block download data ./data.ext4 --node web-1'))
    .action((name: string, file: string, flags: JsonFlags) => runDownload(name, file, flags));
}
