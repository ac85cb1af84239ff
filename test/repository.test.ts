// The repository's own hygiene, as part of `npm test`: the sources type-check
// under the strict settings, Biome finds nothing, and every import under src/
// follows the one-way layer table that README.md's "Architecture" section shows.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import ts from 'typescript';

const root = new URL('..', import.meta.url).pathname;

function run(command: string, args: string[]) {
  return spawnSync(command, args, { cwd: root, encoding: 'utf8', timeout: 120_000 });
}

test('the sources type-check (tsc --noEmit, strict, erasable syntax only)', () => {
  const result = run(process.execPath, [
    'node_modules/typescript/bin/tsc',
    '-p',
    'tsconfig.json',
    '--noEmit',
  ]);
  assert.equal(result.status, 0, `tsc failed:\n${result.stdout}${result.stderr}`);
});

test('biome check finds no lint or format problems', () => {
  const result = run(process.execPath, ['node_modules/@biomejs/biome/bin/biome', 'check', '.']);
  assert.equal(result.status, 0, `biome check failed:\n${result.stdout}${result.stderr}`);
});

// ---------------------------------------------------------------------------
// The layer table. A layer is a folder under src/, or a top-level file
// (errors, logging, index). A layer may import itself and the layers listed
// for it, nothing else; README.md shows the same table (checked below).

const ANYTHING = '(anything)';
const ANYTHING_BUT_CLI = '(anything except cli)';

const LAYERS: Readonly<Record<string, readonly string[]>> = {
  errors: [],
  logging: ['errors'],
  gen: [],
  pki: ['errors'],
  protocol: ['pki', 'errors', 'gen'],
  store: ['errors'],
  files: ['errors'],
  authority: ['pki', 'protocol', 'store', 'errors', 'logging'],
  transport: ['pki', 'protocol', 'errors', 'logging', 'gen'],
  services: ['authority', 'transport', 'protocol', 'pki', 'gen', 'errors', 'logging', 'store (types only)'],
  client: ['transport', 'protocol', 'pki', 'files', 'gen', 'errors', 'logging'],
  agent: [
    'workloads',
    'guest',
    'client',
    'transport',
    'protocol',
    'pki',
    'files',
    'gen',
    'errors',
    'logging',
  ],
  workloads: ['pki', 'protocol', 'files', 'errors', 'logging'],
  guest: ['transport', 'pki', 'protocol', 'files', 'gen', 'errors', 'logging'],
  server: [
    'services',
    'authority',
    'store',
    'client',
    'transport',
    'protocol',
    'pki',
    'files',
    'gen',
    'errors',
    'logging',
  ],
  cli: [ANYTHING],
  index: [ANYTHING_BUT_CLI],
};

/** Why `from` may not import `to` (a one-line rule), or null when it may. */
function breaks(from: string, to: string, typeOnly: boolean): string | null {
  if (from === to) return null;
  const allowed = LAYERS[from];
  if (allowed === undefined) return `${from} is not a layer of the table (a new folder needs a row)`;
  if (LAYERS[to] === undefined) return `${to} is not a layer of the table (a new folder needs a row)`;
  if (allowed.includes(ANYTHING)) return null;
  if (allowed.includes(ANYTHING_BUT_CLI))
    return to === 'cli' ? `${from} may import anything except cli` : null;
  if (allowed.includes(to)) return null;
  if (typeOnly && allowed.includes(`${to} (types only)`)) return null;
  const listed = allowed.length === 0 ? 'nothing of ours' : allowed.join(', ');
  const typesHint = allowed.includes(`${to} (types only)`) ? ` (${to} only with \`import type\`)` : '';
  return `${from} may import ${listed}${typesHint}`;
}

// ---------------------------------------------------------------------------
// The import graph of src/ (src/gen is generated and imports only itself).

interface Edge {
  /** Repository-relative paths. */
  readonly from: string;
  readonly to: string;
  readonly specifier: string;
  /** `import type`, `export type … from`, every named binding marked `type`, or an `import('…')` type. */
  readonly typeOnly: boolean;
}

const src = join(root, 'src');

function sourceFiles(): string[] {
  return readdirSync(src, { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.ts') && !file.startsWith(`gen/`))
    .sort()
    .map((file) => join(src, file));
}

/** The layer of a path under src/: its first folder, or the file's name without `.ts` at the top. */
function layerOf(path: string): string {
  const inside = relative(src, path);
  const [first, ...rest] = inside.split('/');
  return rest.length > 0 ? first : first.replace(/\.ts$/, '');
}

/** `{ type A, type B }`: every named binding is a type, so the import loads nothing at run time. */
function everyBindingIsType(bindings: ts.NamedImportBindings | ts.NamedExportBindings | undefined): boolean {
  if (bindings === undefined || !(ts.isNamedImports(bindings) || ts.isNamedExports(bindings))) return false;
  const elements: readonly (ts.ImportSpecifier | ts.ExportSpecifier)[] = bindings.elements;
  return elements.length > 0 && elements.every((element) => element.isTypeOnly);
}

function isTypeOnlyImport(node: ts.ImportDeclaration): boolean {
  const clause = node.importClause;
  if (clause === undefined) return false; // `import './x.ts'` runs the module
  if (clause.isTypeOnly) return true;
  return clause.name === undefined && everyBindingIsType(clause.namedBindings);
}

function isTypeOnlyExport(node: ts.ExportDeclaration): boolean {
  return node.isTypeOnly || everyBindingIsType(node.exportClause);
}

/** Relative imports of one file: static, re-exports, dynamic `import('…')` and `import('…')` types. */
function importsOf(file: string, text = readFileSync(file, 'utf8')): Edge[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const edges: Edge[] = [];
  const add = (specifier: ts.Expression | undefined, typeOnly: boolean) => {
    if (specifier === undefined || !ts.isStringLiteralLike(specifier)) return;
    if (!specifier.text.startsWith('.')) return;
    edges.push({
      from: relative(root, file),
      to: relative(root, resolve(dirname(file), specifier.text)),
      specifier: specifier.text,
      typeOnly,
    });
  };
  const visit = (node: ts.Node) => {
    if (ts.isImportDeclaration(node)) add(node.moduleSpecifier, isTypeOnlyImport(node));
    else if (ts.isExportDeclaration(node)) add(node.moduleSpecifier, isTypeOnlyExport(node));
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword)
      add(node.arguments[0], false);
    else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument))
      add(node.argument.literal, true);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return edges;
}

const edges = sourceFiles().flatMap((file) => importsOf(file));

/** Cycles among `nodes` (each printed once, as a → b → … → a), by depth-first search. */
function cycles(next: ReadonlyMap<string, ReadonlySet<string>>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string) => {
    state.set(node, 'open');
    stack.push(node);
    for (const target of [...(next.get(node) ?? [])].sort()) {
      if (state.get(target) === 'open') found.push([...stack.slice(stack.indexOf(target)), target]);
      else if (state.get(target) === undefined) visit(target);
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of [...next.keys()].sort()) if (state.get(node) === undefined) visit(node);
  return found;
}

function graph(pairs: Iterable<readonly [string, string]>): Map<string, Set<string>> {
  const next = new Map<string, Set<string>>();
  for (const [from, to] of pairs) {
    if (from === to) continue;
    if (!next.has(from)) next.set(from, new Set());
    next.get(from)!.add(to);
  }
  return next;
}

test('the layer table itself has no cycle', () => {
  const concrete = Object.entries(LAYERS).flatMap(([from, allowed]) =>
    allowed
      .filter((to) => to !== ANYTHING && to !== ANYTHING_BUT_CLI)
      .map((to) => [from, to.replace(' (types only)', '')] as const),
  );
  assert.deepEqual(cycles(graph(concrete)), []);
});

test('src/ was read: its relative imports, generated code among them, were found', () => {
  assert.ok(edges.length > 100, `only ${edges.length} relative imports found under src/`);
  assert.ok(edges.some((edge) => edge.specifier.includes('/gen/')));
});

test('the reader sees every kind of import, and which are type-only', () => {
  const sample = [
    "import { a } from './a.ts';",
    "import type { B } from './b.ts';",
    "import { type C, type D } from './c.ts';",
    "import { type E, f } from './e.ts';",
    "import './side-effect.ts';",
    "export { g } from '../store/g.ts';",
    "export type { H } from './h.ts';",
    "const i = await import('./i.ts');",
    "let j: import('./j.ts').J;",
    "import pino from 'pino';",
    "// import { k } from './comment.ts';",
  ].join('\n');
  const found = importsOf(join(src, 'services', 'sample.ts'), sample).map(
    (edge) => `${edge.to}${edge.typeOnly ? ' (type)' : ''}`,
  );
  assert.deepEqual(found, [
    'src/services/a.ts',
    'src/services/b.ts (type)',
    'src/services/c.ts (type)',
    'src/services/e.ts',
    'src/services/side-effect.ts',
    'src/store/g.ts',
    'src/services/h.ts (type)',
    'src/services/i.ts',
    'src/services/j.ts (type)',
  ]);
});

test('the rule names the file, the import and what the layer may import', () => {
  assert.equal(breaks('pki', 'pki', false), null);
  assert.equal(breaks('cli', 'server', false), null);
  assert.equal(breaks('index', 'cli', false), 'index may import anything except cli');
  assert.equal(breaks('pki', 'store', false), 'pki may import errors');
  assert.equal(breaks('gen', 'errors', false), 'gen may import nothing of ours');
  assert.equal(breaks('services', 'store', true), null);
  assert.match(breaks('services', 'store', false) ?? '', /\(store only with `import type`\)$/);
  assert.match(breaks('widgets', 'pki', false) ?? '', /widgets is not a layer/);
});

test('every import under src/ follows the layer table (README "Architecture")', () => {
  const problems: string[] = [];
  for (const edge of edges) {
    if (!edge.to.startsWith('src/')) {
      problems.push(`${edge.from}: import '${edge.specifier}' leaves src/`);
      continue;
    }
    const rule = breaks(layerOf(join(root, edge.from)), layerOf(join(root, edge.to)), edge.typeOnly);
    if (rule !== null) problems.push(`${edge.from}: import '${edge.specifier}' breaks the rule: ${rule}`);
  }
  assert.deepEqual(problems, [], `imports that break the layer table:\n${problems.join('\n')}`);
});

test('no folder cycle under src/ (folder A imports B and B, perhaps through others, imports A)', () => {
  const layerEdges = edges.map(
    (edge) => [layerOf(join(root, edge.from)), layerOf(join(root, edge.to))] as const,
  );
  const found = cycles(graph(layerEdges)).map((cycle) => cycle.join(' → '));
  assert.deepEqual(found, [], `folder cycles:\n${found.join('\n')}`);
});

test('no file cycle under src/ (dynamic and type-only imports count)', () => {
  const found = cycles(graph(edges.map((edge) => [edge.from, edge.to] as const))).map((cycle) =>
    cycle.join(' → '),
  );
  assert.deepEqual(found, [], `file cycles:\n${found.join('\n')}`);
});

/**
 * README.md's "Architecture" table, `| \`layer\` | what lives there | may import |`,
 * as layer → its "may import" cell.
 */
function readmeTable(): Map<string, string> {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.split(/^## /m).find((part) => part.startsWith('Architecture\n')) ?? '';
  const rows = new Map<string, string>();
  for (const match of section.matchAll(/^\| `(\w+)` \|.*\| ([^|]+) \|$/gm)) rows.set(match[1], match[2]);
  return rows;
}

test('README.md "Architecture" shows this layer table, row for row', () => {
  const expected = new Map(
    Object.entries(LAYERS).map(([layer, allowed]) => [
      layer,
      allowed.length === 0 ? 'nothing of ours' : allowed.join(', '),
    ]),
  );
  assert.deepEqual(
    readmeTable(),
    expected,
    'README.md "## Architecture": | `layer` | what lives there | may import |',
  );
});
