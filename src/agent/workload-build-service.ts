// The BuildImage call: the header, then the context entries until the client
// half-closes, written by ContextUpload into a directory of the build's own;
// then the build (workload-build.ts), its progress streamed back as it comes,
// and the image as the last message. The caller needs "create" (the build is
// a workload of theirs); a refused header writes nothing.
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { invalid, SigilError } from '../errors.ts';
import type { BuildImageHeader, BuildImageProgress, BuildImageRequest } from '../gen/sigil/v1/workloads.ts';
import { ContextUpload } from './build-upload.ts';
import { type BuildDependencies, checkBuildHeader, runBuild } from './workload-build.ts';
import type { WorkloadCaller } from './workload-callers.ts';
import { written } from './workload-grpc.ts';

type BuildCall = grpc.ServerDuplexStream<BuildImageRequest, BuildImageProgress>;

/** Reads the request stream: the header first, every entry into `upload`, until the client's end. */
function receive(
  call: BuildCall,
  dependencies: BuildDependencies,
  uploadDir: string,
): Promise<BuildImageHeader> {
  let header: BuildImageHeader | undefined;
  let upload: ContextUpload | undefined;
  const take = (message: BuildImageRequest): void => {
    const part = message.part;
    if (header === undefined) {
      if (part?.$case !== 'header') throw invalid('the first BuildImage message must be the header');
      checkBuildHeader(part.value, dependencies); // refuse before taking any of the context
      header = part.value;
      upload = new ContextUpload(uploadDir);
      return;
    }
    if (part?.$case !== 'entry') throw invalid('after the header, BuildImage messages carry context entries');
    try {
      upload?.add(part.value);
    } catch (error) {
      if (error instanceof SigilError) throw error;
      throw invalid(`build context entry ${JSON.stringify(part.value.path)}: ${(error as Error).message}`);
    }
  };
  return new Promise((resolve, reject) => {
    const onData = (message: BuildImageRequest) => {
      try {
        take(message);
      } catch (error) {
        call.off('data', onData);
        upload?.finish();
        reject(error);
      }
    };
    call.on('data', onData);
    call.once('error', reject);
    call.once('end', () => {
      upload?.finish();
      if (header) resolve(header);
      else reject(invalid('BuildImage: no header'));
    });
  });
}

export async function handleBuild(call: BuildCall, caller: WorkloadCaller, dependencies: BuildDependencies) {
  const uploadDir = join(dependencies.buildDir, `context-${randomBytes(6).toString('hex')}`);
  try {
    const header = await receive(call, dependencies, uploadDir);
    const send = (part: BuildImageProgress['part']) => {
      if (!call.cancelled) void written(call, call.write({ part }));
    };
    const image = await runBuild(
      dependencies,
      caller,
      header,
      uploadDir,
      {
        step: (text) => send({ $case: 'step', value: text }),
        stdout: (line) => send({ $case: 'stdout', value: line }),
        stderr: (line) => send({ $case: 'stderr', value: line }),
      },
      () => call.cancelled,
    );
    await written(call, call.write({ part: { $case: 'image', value: image } }));
    call.end();
  } finally {
    rmSync(uploadDir, { recursive: true, force: true });
  }
}
