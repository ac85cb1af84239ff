// The framing of firebuild's Resource stream, both ways. One requested path
// yields one or more entries (a directory yields itself and what lies under
// it, as the resolver lists them); each entry travels as a header carrying a
// fresh id, its bytes in chunks that each carry their SHA-256, then an eof
// with the same id. A directory has no chunks.
//
// The sender cuts chunks to a size that leaves room for the rest of the
// message (firebuild: 90 % of the largest message); the receiver checks every
// checksum and that ids and order match, so a corrupted or interleaved stream
// is refused rather than written into a guest's root filesystem.
import { createHash, randomUUID } from 'node:crypto';
import { invalid, SigilError } from '../errors.ts';
import type { ResourceChunk, ResourceChunk_ResourceHeader } from '../gen/firebuild/proto/rootfs_server.ts';
import type { ResourceEntry } from './build-commands.ts';

/** What a guest receives for one entry: its header and, for a file, all its bytes. */
export interface ReceivedResource {
  readonly header: {
    readonly id: string;
    readonly sourcePath: string;
    readonly targetPath: string;
    readonly fileMode: number;
    readonly isDir: boolean;
    readonly targetUser: string;
    readonly targetWorkdir: string;
  };
  /** Empty for a directory. */
  readonly data: Buffer;
}

/** Chunk size for a largest message of `maxMessageBytes`: firebuild's 90 %, the rest for the other fields. */
export function chunkSizeFor(maxMessageBytes: number): number {
  return Math.floor(maxMessageBytes * 0.9);
}

const sha256 = (bytes: Buffer): Buffer => createHash('sha256').update(bytes).digest();

/** `buffers` re-cut into pieces of at most `size` bytes, never empty. */
async function* piecesOf(buffers: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const buffer of buffers) {
    let rest = buffer;
    while (rest.length > 0) {
      const take = Math.min(rest.length, size - pendingBytes);
      pending.push(rest.subarray(0, take));
      pendingBytes += take;
      rest = rest.subarray(take);
      if (pendingBytes === size) {
        yield Buffer.concat(pending, pendingBytes);
        pending = [];
        pendingBytes = 0;
      }
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
}

/** The messages for `entries`, in order: per entry a header, checksummed chunks of at most `chunkBytes`, an eof. */
export async function* resourceChunks(
  entries: readonly ResourceEntry[],
  chunkBytes: number,
): AsyncGenerator<ResourceChunk> {
  for (const entry of entries) {
    const id = randomUUID();
    const header: ResourceChunk_ResourceHeader = {
      sourcePath: entry.sourcePath,
      targetPath: entry.targetPath,
      fileMode: entry.fileMode,
      isDir: entry.isDir,
      targetUser: entry.targetUser,
      targetWorkdir: entry.targetWorkdir,
      id,
    };
    if (!entry.isDir && !entry.read)
      // A resolver bug; sending it as an empty file would corrupt the build quietly.
      throw new SigilError('internal', `resource entry '${entry.sourcePath}' is a file without read()`);
    yield { payload: { $case: 'header', value: header } };
    if (!entry.isDir && entry.read) {
      for await (const chunk of piecesOf(entry.read(), chunkBytes)) {
        yield { payload: { $case: 'chunk', value: { chunk, checksum: sha256(chunk), id } } };
      }
    }
    yield { payload: { $case: 'eof', value: { id } } };
  }
}

/**
 * Reassembles a Resource stream into entries, refusing (SigilError invalid,
 * naming the requested path and the entry) a chunk whose checksum does not
 * match, a message whose id is not the open entry's, data for a directory,
 * and a stream that ends inside an entry.
 */
interface OpenEntry {
  readonly header: ReceivedResource['header'];
  readonly parts: Buffer[];
}

export class ResourceAssembler {
  readonly #requested: string;
  #open: OpenEntry | null = null;

  /** `requested` names the request in errors ("<stage>/<path>" or the path). */
  constructor(requested: string) {
    this.#requested = requested;
  }

  /** Takes the next message; returns an entry when this message completed one. */
  accept(message: ResourceChunk): ReceivedResource | null {
    const payload = message.payload;
    if (payload === undefined) throw this.#refuse('a message without header, chunk or eof');
    switch (payload.$case) {
      case 'header': {
        if (this.#open) throw this.#refuse(`a header before the eof of '${this.#open.header.sourcePath}'`);
        const header = payload.value;
        if (header.id === '') throw this.#refuse(`the header of '${header.sourcePath}' has no id`);
        this.#open = {
          header: {
            id: header.id,
            sourcePath: header.sourcePath,
            targetPath: header.targetPath,
            fileMode: header.fileMode,
            isDir: header.isDir,
            targetUser: header.targetUser,
            targetWorkdir: header.targetWorkdir,
          },
          parts: [],
        };
        return null;
      }
      case 'chunk': {
        const open = this.#expect(payload.value.id, 'a chunk');
        if (open.header.isDir) throw this.#refuse(`data for directory '${open.header.sourcePath}'`);
        const { chunk, checksum } = payload.value;
        if (!sha256(chunk).equals(checksum))
          throw this.#refuse(`a chunk of '${open.header.sourcePath}' does not match its SHA-256 checksum`);
        open.parts.push(chunk);
        return null;
      }
      case 'eof': {
        const open = this.#expect(payload.value.id, 'an eof');
        this.#open = null;
        return { header: open.header, data: Buffer.concat(open.parts) };
      }
    }
  }

  /** Call when the stream has ended: refuses an entry left without its eof. */
  finish(): void {
    if (this.#open) throw this.#refuse(`the stream ended inside '${this.#open.header.sourcePath}'`);
  }

  #expect(id: string, what: string): OpenEntry {
    const open = this.#open;
    if (!open) throw this.#refuse(`${what} before any header`);
    if (id !== open.header.id)
      throw this.#refuse(
        `${what} with id '${id}' inside '${open.header.sourcePath}' (id '${open.header.id}')`,
      );
    return open;
  }

  #refuse(problem: string): SigilError {
    return invalid(`resource '${this.#requested}': ${problem}`);
  }
}
