#!/usr/bin/env node
// Entry point of the `sigil` command. Inside this repository Node runs the
// TypeScript sources directly (type stripping); an installed package, whose
// files live under node_modules where Node does not strip types, runs dist/.
const installed = import.meta.url.includes('/node_modules/');
const { main } = await import(installed ? '../dist/cli/main.js' : '../src/cli/main.ts');
process.exitCode = await main(process.argv);
