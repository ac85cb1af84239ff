// After a bootstrap: the new trust domain's admin identity goes into the
// data directory (admin.pem / admin.key, 0600) and the log. It counts as
// delivered only once the server listens (start-server.ts confirms it then).
import type { BootstrapOutput } from '../authority/authority.ts';
import type { Logger } from '../logging.ts';
import { writeAdminIdentity } from './data-directory.ts';

/** What a bootstrap produced (the key itself is only in the file). */
export interface BootstrapInfo {
  readonly trustDomain: string;
  readonly rootFingerprint: string;
  readonly adminSpiffeId: string;
  readonly adminCertificatePath: string;
  readonly adminKeyPath: string;
}

export function writeBootstrapIdentity(dataDir: string, output: BootstrapOutput, log: Logger): BootstrapInfo {
  const paths = writeAdminIdentity(dataDir, {
    certificatePem: output.adminCertificatePem,
    keyPem: output.adminKeyPem,
  });
  log.info(
    { trustDomain: output.trustDomain, rootFingerprint: output.rootFingerprint, admin: output.adminSpiffeId },
    'bootstrapped a new trust domain',
  );
  return {
    trustDomain: output.trustDomain,
    rootFingerprint: output.rootFingerprint,
    adminSpiffeId: output.adminSpiffeId,
    adminCertificatePath: paths.certificatePath,
    adminKeyPath: paths.keyPath,
  };
}
