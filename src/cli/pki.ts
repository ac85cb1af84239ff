// The `sigil pki` command group: flags, help and examples only. Each command's
// work lives in its own file (pki-init.ts, pki-issue.ts, …); CA directory
// handling in ca-directory.ts. Flags override SIGIL_* environment variables.
// Command modules are imported when their command runs, so `--help` and
// every other command stay quick to start.
import { type Command, Option } from 'commander';
import { KEY_TYPES } from '../pki/keys.ts';
import { DEFAULT_TRUST_DOMAIN } from '../pki/names.ts';
import { DEFAULT_INTERMEDIATE_NAME, DEFAULT_ROOT_NAME } from './ca-names.ts';
import type { LeafProfile } from './leaf.ts';

const DEFAULT_KEY_TYPE = 'p256';

/** Repeatable and comma-separated: `--dns a --dns b,c` → [a, b, c]. */
function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...value.split(',').map((item) => item.trim())];
}

const listOption = (flags: string, description: string) =>
  new Option(flags, `${description} (repeatable, or comma-separated)`).argParser(collect);

const dirOption = (description: string) =>
  new Option('--dir <dir>', description).env('SIGIL_CA_DIR').makeOptionMandatory();

const passphraseOption = (description: string) =>
  new Option('--passphrase-file <file>', `${description} (its first line; else $SIGIL_CA_PASSPHRASE)`);

const keyTypeOption = (what: string, defaultText: string) =>
  new Option('--key-type <type>', `${what}: ${KEY_TYPES.join(', ')} (default: ${defaultText})`).env(
    'SIGIL_KEY_TYPE',
  );

const trustDomainOption = () =>
  new Option('--trust-domain <name>', 'SPIFFE trust domain of every certificate (spiffe://<name>/…)')
    .env('SIGIL_TRUST_DOMAIN')
    .default(DEFAULT_TRUST_DOMAIN);

const jsonOption = () => new Option('--json', 'print the result as JSON');

function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((line) => `  ${line}`).join('\n')}\n`;
}

interface InitFlags {
  dir: string;
  keyType?: string;
  intermediate?: boolean;
  name: string;
  intermediateName: string;
  ttl: string;
  trustDomain: string;
  passphraseFile?: string;
  force?: boolean;
  json?: boolean;
}

interface IssueFlags {
  dir: string;
  out: string;
  server?: boolean;
  client?: boolean;
  dns?: string[];
  ip?: string[];
  uri?: string[];
  email?: string[];
  name?: string;
  spiffeId?: string;
  ttl: string;
  keyType?: string;
  csr?: string;
  passphraseFile?: string;
  force?: boolean;
  json?: boolean;
}

interface CrlFlags {
  dir: string;
  revoke?: string[];
  out: string;
  nextUpdate: string;
  der?: boolean;
  root?: boolean;
  passphraseFile?: string;
  force?: boolean;
  json?: boolean;
}

interface QuickstartFlags {
  out: string;
  dns?: string[];
  ip?: string[];
  keyType?: string;
  trustDomain: string;
  clientName: string;
  ttl: string;
  caTtl: string;
  force?: boolean;
  json?: boolean;
}

export function registerPkiCommands(program: Command): void {
  const pki = program
    .command('pki')
    .description(
      'Certificate authority files: create a CA, issue certificates, sign CRLs, inspect anything PEM or DER',
    );

  pki
    .command('init')
    .description(
      'Create a CA directory: a root (and optionally an intermediate) certificate and key, ca.pem and sigil-ca.json',
    )
    .addOption(dirOption('the CA directory to create (mode 0700 when created)'))
    .addOption(keyTypeOption('key type of the CA keys', DEFAULT_KEY_TYPE))
    .option('--intermediate', 'also create an intermediate CA (pathLen 0) that does all issuing')
    .option('--name <cn>', 'common name of the root', DEFAULT_ROOT_NAME)
    .option('--intermediate-name <cn>', 'common name of the intermediate', DEFAULT_INTERMEDIATE_NAME)
    .option('--ttl <duration>', 'lifetime of the root; the intermediate gets half of it', '10y')
    .addOption(trustDomainOption())
    .addOption(passphraseOption('encrypt the CA keys (PKCS#8) with the passphrase in this file'))
    .option('--force', 'replace an existing CA in the directory')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples(
        '$ sigil pki init --dir ./ca',
        '$ sigil pki init --dir ./ca --intermediate --key-type ed25519 --trust-domain prod.example.com',
        '$ sigil pki init --dir /etc/sigil/ca --passphrase-file ./ca-passphrase --ttl 5y',
      ),
    )
    .action(async (flags: InitFlags) => {
      const { runInit } = await import('./pki-init.ts');
      runInit({ ...flags, keyType: flags.keyType ?? DEFAULT_KEY_TYPE });
    });

  pki
    .command('issue')
    .description(
      'Issue a server and/or client certificate from a CA directory (with its intermediate, if it has one); ' +
        'writes PREFIX.pem (certificate + chain) and PREFIX.key',
    )
    .addOption(dirOption('the CA directory'))
    .requiredOption('--out <prefix>', 'write PREFIX.pem and PREFIX.key')
    .option('--server', 'a server certificate (extendedKeyUsage serverAuth)')
    .option('--client', 'a client certificate (extendedKeyUsage clientAuth)')
    .addOption(listOption('--dns <name>', 'DNS name'))
    .addOption(listOption('--ip <address>', 'IP address'))
    .addOption(listOption('--uri <uri>', 'URI'))
    .addOption(listOption('--email <address>', 'email address'))
    .option('--name <cn>', 'subject common name (default: the first DNS name or IP address)')
    .option(
      '--spiffe-id <id>',
      "SPIFFE ID (default: the CSR's, else spiffe://<trust domain>/<server|client>/<name>)",
    )
    .option('--ttl <duration>', "lifetime (cut to the issuing CA's end)", '24h')
    .addOption(keyTypeOption('key type of the new key', "the CA's"))
    .option(
      '--csr <file>',
      'certify the key in this PKCS#10 request instead of generating one (no PREFIX.key)',
    )
    .addOption(passphraseOption('the CA key passphrase is in this file'))
    .option('--force', 'overwrite existing output files')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples(
        '$ sigil pki issue --dir ./ca --server --dns api.internal --ip 10.0.0.5 --out ./api',
        '$ sigil pki issue --dir ./ca --client --name alice --ttl 8h --out ./alice',
        '$ sigil pki issue --dir ./ca --server --client --csr node.csr --dns node-1.internal --out ./node-1',
      ),
    )
    .action(async (flags: IssueFlags, command: Command) => {
      if (!flags.server && !flags.client) command.error('error: choose --server and/or --client');
      if (flags.csr !== undefined && command.getOptionValueSource('keyType') === 'cli') {
        command.error('error: --key-type does not apply with --csr (the key comes from the request)');
      }
      const profile: LeafProfile =
        flags.server && flags.client ? 'server+client' : flags.server ? 'server' : 'client';
      const { runIssue } = await import('./pki-issue.ts');
      runIssue({
        ...flags,
        profile,
        dns: flags.dns ?? [],
        ip: flags.ip ?? [],
        uri: flags.uri ?? [],
        email: flags.email ?? [],
        keyType: flags.csr === undefined ? flags.keyType : undefined,
      });
    });

  pki
    .command('inspect')
    .description('Describe certificates, chains, CSRs, CRLs and keys (PEM or DER)')
    .argument('<file...>', 'files to inspect')
    .addOption(passphraseOption('decrypt encrypted keys with the passphrase in this file'))
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples(
        '$ sigil pki inspect ./api.pem',
        '$ sigil pki inspect --json ca/root.pem ca/root.key node.csr',
      ),
    )
    .action(async (files: string[], flags: { passphraseFile?: string; json?: boolean }) => {
      const { runInspect } = await import('./pki-inspect.ts');
      runInspect(files, flags);
    });

  pki
    .command('crl')
    .description(
      "Sign a certificate revocation list with the CA directory's issuing CA and advance its CRL number; " +
        'it lists every serial that CA revoked so far (kept in revocations.json)',
    )
    .addOption(dirOption('the CA directory'))
    .addOption(
      listOption(
        '--revoke <serial[:reason]>',
        'revoke this serial (hex; colons or 0x allowed), reason by name; SERIAL:removeFromCRL releases a certificateHold',
      ),
    )
    .requiredOption('--out <file>', 'write the CRL here')
    .option('--next-update <duration>', 'when relying parties should expect the next CRL', '7d')
    .option('--der', 'write DER instead of PEM')
    .option('--root', 'sign with the root even when there is an intermediate (the CRL for the root level)')
    .addOption(passphraseOption('the CA key passphrase is in this file'))
    .option('--force', 'overwrite an existing CRL file')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples(
        '$ sigil pki crl --dir ./ca --out ./ca/crl.pem',
        '$ sigil pki crl --dir ./ca --revoke 5f3a9c0e:keyCompromise --revoke 0x7b --out ./crl.pem --force',
        '$ sigil pki crl --dir ./ca --revoke 7c:removeFromCRL --out ./crl.pem --force   # 7c was on certificateHold',
      ),
    )
    .action(async (flags: CrlFlags) => {
      const { runCrl } = await import('./pki-crl.ts');
      runCrl({ ...flags, revoke: flags.revoke ?? [] });
    });

  pki
    .command('verify')
    .description(
      'Verify a certificate with OpenSSL: its chain to the --ca roots, its purpose, a name, and CRLs ' +
        "(exit 0 verified, 1 not, with OpenSSL's reason)",
    )
    .argument(
      '<file>',
      'the certificate (PEM or DER); more certificates after it are untrusted intermediates',
    )
    .requiredOption('--ca <file>', 'trusted root certificates (PEM), the only trust anchors')
    .addOption(listOption('--untrusted <file>', 'more intermediate certificates (PEM)'))
    .addOption(
      new Option('--purpose <purpose>', 'what the certificate must be good for')
        .choices(['server', 'client', 'any'])
        .default('any'),
    )
    .option('--name <name>', 'a DNS name or IP address the certificate must be valid for (SANs only)')
    .addOption(listOption('--crl <file>', 'check revocation against this CRL (PEM or DER)'))
    .option(
      '--crl-all',
      'check CRLs at every level of the chain, not only the leaf (each level needs its CRL)',
    )
    .option('--x509-strict', "OpenSSL's -x509_strict: RFC 5280 structure rules on every certificate")
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples(
        '$ sigil pki verify ./api.pem --ca ./ca/ca.pem --purpose server --name api.internal',
        '$ sigil pki verify ./node/cert.pem --ca ./node/bundle.pem --purpose client --crl ./crl.pem --json',
      ),
    )
    .action(
      async (
        file: string,
        flags: {
          ca: string;
          untrusted?: string[];
          purpose: 'server' | 'client' | 'any';
          name?: string;
          crl?: string[];
          crlAll?: boolean;
          x509Strict?: boolean;
          json?: boolean;
        },
      ) => {
        const { runVerify } = await import('./pki-verify.ts');
        await runVerify(file, flags);
      },
    );

  pki
    .command('quickstart')
    .description(
      'Everything for mutual TLS in one step: a CA, a server and a client certificate, ready for gRPC or openssl',
    )
    .requiredOption('--out <dir>', 'directory for ca.pem, server.pem/.key, client.pem/.key and the CA in ca/')
    .addOption(listOption('--dns <name>', 'server DNS name (default: localhost when no --dns or --ip)'))
    .addOption(listOption('--ip <address>', 'server IP address (default: 127.0.0.1 when no --dns or --ip)'))
    .addOption(keyTypeOption('key type of every key', DEFAULT_KEY_TYPE))
    .addOption(trustDomainOption())
    .option('--client-name <name>', 'common name of the client certificate', 'client')
    .option('--ttl <duration>', 'lifetime of the server and client certificates', '24h')
    .option('--ca-ttl <duration>', 'lifetime of the root CA', '10y')
    .option('--force', 'overwrite existing files')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples(
        '$ sigil pki quickstart --out ./certs',
        '$ sigil pki quickstart --out ./certs --dns api.internal,localhost --ip 127.0.0.1 --client-name web',
      ),
    )
    .action(async (flags: QuickstartFlags) => {
      const { runQuickstart } = await import('./pki-quickstart.ts');
      runQuickstart({
        ...flags,
        dns: flags.dns ?? [],
        ip: flags.ip ?? [],
        keyType: flags.keyType ?? DEFAULT_KEY_TYPE,
      });
    });
}
