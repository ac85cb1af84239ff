#!/usr/bin/env node
// Entry point of the `sigil` command. Inside this repository Node runs the
// TypeScript sources directly (type stripping); an installed package, whose
// files live under node_modules where Node does not strip types, runs dist/.
import module from 'node:module';

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
