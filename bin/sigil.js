#!/usr/bin/env node
// Entry point of the `sigil` command. Inside this repository Node runs the
// TypeScript sources directly (type stripping, without flags from Node 22.18
// and 23.6); an installed package, whose files live under node_modules where
// Node does not strip types, runs dist/.
//
// The supported range is checked before anything else is loaded, so an older
// Node gets one line instead of a syntax error or a stack trace. It is the
// "engines" range of package.json (test/cli/engines.test.ts keeps the two in
// step); this file itself parses on any Node that has ES modules.
const SUPPORTED = '^22.18.0 || >=23.6.0';
const [major, minor] = process.versions.node.split('.').map(Number);
if (!((major === 22 && minor >= 18) || (major === 23 && minor >= 6) || major >= 24)) {
  process.stderr.write(
    `sigil: needs Node.js ${SUPPORTED}, this is ${process.version} (${process.execPath}); ` +
      "in this repository run it with the project's own Node: npx sigil, npm run sigil, or node_modules/.bin/node bin/sigil.js\n",
  );
  process.exit(1);
}

const { default: module } = await import('node:module');
// Caches compiled code between runs: halves the start-up of every command.
module.enableCompileCache?.();
// `sigil … | head` closes stdout early; that is not an error worth a stack trace.
process.stdout.on('error', (error) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw error;
});

const installed = import.meta.url.includes('/node_modules/');
const { main } = await import(installed ? '../dist/cli/main.js' : '../src/cli/main.ts');
process.exitCode = await main(process.argv);
