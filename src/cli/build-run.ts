// The work of `sigil build` (build.ts registers it): the Dockerfile and the
// context directory streamed to the node's BuildImage, the build's steps and
// output printed as they come (steps on stderr, the build's own output on
// stdout and stderr), the image at the end.
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { invalid, notFound } from '../errors.ts';
import type { BuildImageProgress, BuildImageRequest, BuiltImage } from '../gen/sigil/v1/workloads.ts';
import { printResult } from './output.ts';
import { type NodeFlags, received, withWorkloads } from './workload-connection.ts';
import { parseMemoryMiB } from './workload-flags.ts';

export interface BuildFlags extends NodeFlags {
  file?: string;
  tag: string;
  buildArg?: string[];
  net?: string;
  memory?: string;
  runtime?: string;
  json?: boolean;
}

const CHUNK_BYTES = 1024 * 1024;

function buildArgs(values: readonly string[]): Record<string, string> {
  const args: Record<string, string> = {};
  for (const value of values) {
    const equals = value.indexOf('=');
    if (equals <= 0) throw invalid(`--build-arg ${JSON.stringify(value)}: expected NAME=VALUE`);
    args[value.slice(0, equals)] = value.slice(equals + 1);
  }
  return args;
}

/** The context's entries, parents before children, as BuildImage messages (files in chunks). */
function* contextMessages(root: string): Generator<BuildImageRequest> {
  const walk = function* (dir: string): Generator<BuildImageRequest> {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const relativePath = relative(root, path).split(sep).join('/');
      const stats = lstatSync(path);
      const entry = {
        path: relativePath,
        mode: stats.mode & 0o777,
        isDir: false,
        data: Buffer.alloc(0),
        symlink: '',
      };
      if (stats.isSymbolicLink()) {
        yield { part: { $case: 'entry', value: { ...entry, symlink: readlinkSync(path) } } };
      } else if (stats.isDirectory()) {
        yield { part: { $case: 'entry', value: { ...entry, isDir: true } } };
        yield* walk(path);
      } else if (stats.isFile()) {
        const data = readFileSync(path);
        yield { part: { $case: 'entry', value: { ...entry, data: data.subarray(0, CHUNK_BYTES) } } };
        for (let offset = CHUNK_BYTES; offset < data.length; offset += CHUNK_BYTES)
          yield {
            part: {
              $case: 'entry',
              value: { ...entry, path: '', data: data.subarray(offset, offset + CHUNK_BYTES) },
            },
          };
      }
      // Devices, FIFOs and sockets have no place in a build context: left out.
    }
  };
  yield* walk(root);
}

export async function runBuild(contextText: string, flags: BuildFlags): Promise<void> {
  const context = resolve(contextText);
  let stats: ReturnType<typeof lstatSync>;
  try {
    stats = lstatSync(context);
  } catch {
    throw notFound(`build context ${contextText}: no such directory`);
  }
  if (!stats.isDirectory()) throw invalid(`build context ${contextText}: not a directory`);
  const dockerfilePath = flags.file ?? join(context, 'Dockerfile');
  let dockerfile: Buffer;
  try {
    dockerfile = readFileSync(dockerfilePath);
  } catch {
    throw notFound(`Dockerfile ${dockerfilePath}: cannot be read`);
  }
  const header = {
    tag: flags.tag,
    dockerfile,
    buildArgs: buildArgs(flags.buildArg ?? []),
    runtime: flags.runtime ?? '',
    networks: flags.net ? [flags.net] : [],
    memoryMib: flags.memory === undefined ? 0 : parseMemoryMiB(flags.memory),
  };
  const image = await withWorkloads(flags, async ({ client, target }) => {
    const call = client.buildImage();
    call.on('error', () => {}); // the failure arrives through the reading loop below
    const sending = (async () => {
      call.write({ part: { $case: 'header', value: header } });
      for (const message of contextMessages(context)) {
        if (!call.write(message)) await new Promise((resolve) => call.once('drain', resolve));
      }
      call.end();
    })();
    let built: BuiltImage | undefined;
    for await (const progress of received<BuildImageProgress>(call, target)) {
      const part = progress.part;
      if (part?.$case === 'step') process.stderr.write(`# ${part.value}\n`);
      else if (part?.$case === 'stdout') process.stdout.write(flags.json ? '' : `${part.value}\n`);
      else if (part?.$case === 'stderr') process.stderr.write(`${part.value}\n`);
      else if (part?.$case === 'image') built = part.value;
    }
    await sending.catch(() => {});
    if (!built) throw invalid('the node ended the build without an image');
    return built;
  });
  printResult(flags, image, () =>
    [
      `built ${image.tag} in ${(Number(image.durationMs) / 1000).toFixed(1)} s (${Number(image.sizeBytes)} bytes of ext4)`,
      `  run it: sigil workload create NAME --node ${flags.node} --image ${image.tag}`,
    ].join('\n'),
  );
}
