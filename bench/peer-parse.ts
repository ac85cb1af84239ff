// What an mTLS server parses per connection (issue 14, renewal storms): the
// strict chain checks (src/transport/chain-strictness.ts) on the peer's chain
// and its identity (src/transport/peer-identity.ts), on a chain shaped like a
// node's: [its own leaf, the replica's intermediate, the root]. Every
// connection brings a leaf never seen before (more distinct leaves than any
// cache holds, cycled), while the CAs are the same bytes in fresh buffers, as
// a handshake reports them.
//
// Cases, one line each (median of runs; ratio per round, then the median):
//   per-connection  connections/s of this tree; baseline "node-x509-leaf":
//                   only `new X509Certificate(leaf)`, the floor Node's own
//                   parse sets.
//   before-after    with SIGIL_PEER_PARSE_BEFORE_ROOT=DIR (a copy of the
//                   repository before a change, with src/ and node_modules/):
//                   this tree's rate against DIR's, interleaved in the same
//                   runs: the median of the per-round ratios, then the rates.
//
// Knobs: SIGIL_PEER_PARSE_LEAVES (3000 distinct leaves), SIGIL_BENCH_RUNS,
// SIGIL_BENCH_MS, SIGIL_BENCH_SLICES, SIGIL_BENCH_WARMUP_MS (bench/measure.ts).
// A CPU profile of the per-connection work: node --cpu-prof bench/peer-parse.ts.
import { X509Certificate } from 'node:crypto';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { EmbeddedCA } from '../src/transport/embedded-ca.ts';
import { type Limits, median, positiveNumber, type Report, timed } from './measure.ts';

export const description =
  'per-connection peer parsing (strict chain checks + peer identity) on a node-shaped chain, ' +
  'connections/s; before/after with SIGIL_PEER_PARSE_BEFORE_ROOT';

const progress = (line: string) => process.stderr.write(`${line}\n`);

type ChainCheck = (chain: readonly Buffer[]) => unknown;
type Identity = (chain: readonly Buffer[], issuedBy: 'deployment') => { spiffeId: string | null };

interface Tree {
  readonly checkChainStrictness: ChainCheck;
  readonly identityFromChain: Identity;
}

async function treeAt(root: string): Promise<Tree> {
  const base = pathToFileURL(`${resolve(root)}/src/transport/`);
  const strictness = await import(new URL('chain-strictness.ts', base).href);
  const identity = await import(new URL('peer-identity.ts', base).href);
  return {
    checkChainStrictness: strictness.checkChainStrictness,
    identityFromChain: identity.identityFromChain,
  };
}

function derOf(pem: string): Buffer[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)].map(
    (match) => new X509Certificate(match[0]).raw,
  );
}

/** One connection's work, as MtlsServer and the first call's peerIdentity do it. */
function connectionWork(tree: Tree, leaves: readonly Buffer[], cas: readonly Buffer[]): () => void {
  let next = 0;
  return () => {
    const leaf = leaves[next];
    next = (next + 1) % leaves.length;
    // Fresh buffers per connection, as getPeerX509Certificate().raw hands them out.
    const chain = [Buffer.from(leaf), ...cas.map((ca) => Buffer.from(ca))];
    if (tree.checkChainStrictness(chain) !== undefined) throw new Error('the node chain was refused');
    if (tree.identityFromChain(chain, 'deployment').spiffeId === null) throw new Error('no SPIFFE ID');
  };
}

/** Interleaved runs of every subject; per-run rates by subject. */
async function interleaved(
  subjects: Readonly<Record<string, () => void>>,
  limits: Limits,
): Promise<Record<string, number[]>> {
  const names = Object.keys(subjects);
  for (const name of names) await timed(subjects[name], limits.warmupMs, limits.maxOps);
  const rates: Record<string, number[]> = Object.fromEntries(names.map((name) => [name, []]));
  const sliceMs = limits.maxMs / limits.slices;
  for (let run = 0; run < limits.runs; run++) {
    const totals = Object.fromEntries(names.map((name) => [name, { ops: 0, ms: 0 }]));
    for (let slice = 0; slice < limits.slices; slice++) {
      for (let i = 0; i < names.length; i++) {
        const name = names[(i + run + slice) % names.length];
        const sample = await timed(subjects[name], sliceMs, limits.maxOps);
        totals[name].ops += sample.ops;
        totals[name].ms += sample.ms;
      }
    }
    for (const name of names) rates[name].push((totals[name].ops * 1000) / totals[name].ms);
    progress(
      `  run ${run + 1}/${limits.runs}: ${names.map((name) => `${name} ${Math.round(rates[name][run])}/s`).join(', ')}`,
    );
  }
  return rates;
}

const perRoundRatio = (values: readonly number[], baseline: readonly number[]): number =>
  median(values.map((value, run) => value / baseline[run]));

export async function run(report: Report, limits: Limits): Promise<void> {
  const leafCount = Math.round(positiveNumber('SIGIL_PEER_PARSE_LEAVES', 3000));
  const ca = EmbeddedCA.create({ addresses: ['localhost'], intermediate: true });
  try {
    const cas = derOf(ca.chainPem());
    const leaves: Buffer[] = [];
    for (let i = 0; i < leafCount; i++) leaves.push(derOf(ca.issueClient(`node-${i}`).certificateChain)[0]);
    progress(`${leafCount} distinct node leaves; CAs: ${cas.length} (intermediate, root)`);
    const after = await treeAt(resolve(import.meta.dirname, '..'));
    const beforeRoot = process.env.SIGIL_PEER_PARSE_BEFORE_ROOT;
    let floorNext = 0;
    const subjects: Record<string, () => void> = {
      after: connectionWork(after, leaves, cas),
      'node-x509-leaf': () => {
        new X509Certificate(Buffer.from(leaves[floorNext]));
        floorNext = (floorNext + 1) % leaves.length;
      },
    };
    if (beforeRoot) subjects.before = connectionWork(await treeAt(beforeRoot), leaves, cas);
    const rates = await interleaved(subjects, limits);
    report({
      case: 'per-connection',
      metric: 'connections_per_s',
      value: median(rates.after),
      baselines: { 'node-x509-leaf': median(rates['node-x509-leaf']) },
    });
    progress(`per-connection µs (median): this tree ${(1e6 / median(rates.after)).toFixed(1)}`);
    if (rates.before) {
      const ratio = perRoundRatio(rates.after, rates.before);
      progress(
        `before ${(1e6 / median(rates.before)).toFixed(1)} µs; per-round ratios after/before: ` +
          rates.after.map((value, run) => (value / rates.before[run]).toFixed(2)).join(' '),
      );
      process.stderr.write(`median per-round speed-up: ${ratio.toFixed(2)}×\n`);
      // The median of the per-round ratios (the line below it divides two medians instead).
      report({ case: 'before-after', metric: 'per_round_speedup_median', value: ratio, baselines: {} });
      report({
        case: 'before-after',
        metric: 'connections_per_s',
        value: median(rates.after),
        baselines: { before: median(rates.before) },
      });
    }
  } finally {
    ca.close();
  }
}
