// `npm run gen`: TypeScript for every proto tree, with ts-proto through buf
// (both from npm, see buf.yaml and buf.gen.yaml). Each tree gets its own
// output directory, emptied first (`clean: true`), so a deleted .proto leaves
// no stale module behind. A tree without .proto files is skipped: buf refuses
// to build an empty module.
//
// The generated code is committed. It runs under Node's type stripping as is:
// relative imports end in `.ts` (importSuffix), enums are `as const` objects
// (enumsAsLiterals), type-only imports say `type`.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

const TREES: readonly { input: string; output: string }[] = [
  { input: 'proto', output: 'src/gen' },
  { input: 'examples/casino/proto', output: 'examples/casino/gen' },
  // firebuild's bootstrap service (package `proto`, src/guest/bootstrap-*.ts), kept out of sigil's own
  // proto tree. It lands inside src/gen (generated, unlinted, checked for freshness like the rest) and
  // must come after 'proto': that tree's clean empties all of src/gen first.
  { input: 'proto-firebuild', output: 'src/gen/firebuild' },
];

function hasProtos(directory: string): boolean {
  if (!existsSync(directory)) return false;
  return readdirSync(directory, { recursive: true, encoding: 'utf8' }).some((file) =>
    file.endsWith('.proto'),
  );
}

const buf = join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'buf.cmd' : 'buf');
for (const { input, output } of TREES) {
  if (!hasProtos(join(root, input))) {
    process.stderr.write(`gen: ${input}/ has no .proto files, skipped\n`);
    continue;
  }
  execFileSync(buf, ['generate', input, '--output', output], { cwd: root, stdio: 'inherit' });
  process.stderr.write(`gen: ${input}/ → ${output}/\n`);
}
