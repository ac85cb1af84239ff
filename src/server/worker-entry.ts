// The file `sigil server --workers N` forks for each worker (worker-process.ts).
import module from 'node:module';
import { runWorker } from './worker-process.ts';

// As bin/sigil.js does: compiled code cached between starts.
module.enableCompileCache?.();
runWorker();
