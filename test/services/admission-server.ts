// A real control plane (startServer, SQLite in a temp dir, a node enrolled
// with the real `sigil enrol`) plus a second mTLS listener in front of the
// same authority whose CertificateAuthority service runs behind an
// AdmissionControl the test holds, so a test can fill the slots itself and
// see exactly what a caller beyond the limits gets. The listener is built
// like the server's own (server material, revocation, deployment
// authorities, authorization rules); only the admission limits differ.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after } from 'node:test';
import { Registry } from 'prom-client';
import { readIdentity } from '../../src/agent/identity-files.ts';
import type { Caller } from '../../src/authority/identities.ts';
import { CertificateAuthorityService } from '../../src/gen/sigil/v1/sigil.ts';
import type { TlsMaterial } from '../../src/pki/material.ts';
import type { AdmissionControl } from '../../src/services/admission.ts';
import { sigilAuthorizationInterceptor } from '../../src/services/authorization-rules.ts';
import { certificateAuthorityService } from '../../src/services/certificate-authority.ts';
import { ServerMetrics } from '../../src/services/server-metrics.ts';
import { MtlsServer } from '../../src/transport/mtls-server.ts';
import { startTestServer, type TestServer } from '../agent/server-fixture.ts';

/** Sees every certificate in the store (listCertificates for an admin). */
const STORE_READER: Caller = { spiffeId: '', serial: '', fingerprint: '', role: 'admin', name: 'test' };

export interface AdmissionServer {
  readonly control: TestServer;
  /** HOST:PORT of the listener behind `admission`. */
  readonly address: string;
  readonly registry: Registry;
  /** A UP node's identity directory (its node.json points at `address`). */
  readonly nodeDir: string;
  readonly node: TlsMaterial;
  readonly admin: TlsMaterial;
  /** Serials of every certificate in the store. */
  certificates(): Promise<string[]>;
  /** A counter's value from `registry`. */
  counter(name: string, labels: Record<string, string>): Promise<number>;
  close(): Promise<void>;
}

/** Call at a file's top level: everything is closed after the file's tests (node:test after()). */
export async function startAdmissionServer(admission: AdmissionControl): Promise<AdmissionServer> {
  const control = await startTestServer();
  const { authority } = control.running;
  const registry = new Registry();
  const metrics = new ServerMetrics(registry);
  const service = certificateAuthorityService({ authority, metrics, admission });
  const mtls = new MtlsServer({
    material: authority.serverMaterial(),
    revocation: authority.revocationSource(),
    deploymentAuthorities: () => authority.deploymentAuthorities(),
    delegation: { trustDomain: authority.trustDomain, policyOid: authority.policyOid },
    interceptors: [sigilAuthorizationInterceptor(authority.trustDomain)],
  });
  mtls.addService(CertificateAuthorityService, service.implementation);
  after(() => mtls.close(0));
  const port = await mtls.listen('127.0.0.1', 0);
  const address = `127.0.0.1:${port}`;

  const nodeDir = await control.enrolledNode();
  // The node's agent talks to this listener.
  const nodeJson = join(nodeDir, 'node.json');
  const info = JSON.parse(readFileSync(nodeJson, 'utf8')) as { addresses: string[] };
  info.addresses = [address];
  writeFileSync(nodeJson, JSON.stringify(info, null, 2));

  const data = control.running.info;
  const dataFile = (name: string) => readFileSync(join(control.dataDir, name), 'utf8');
  return {
    control,
    address,
    registry,
    nodeDir,
    node: readIdentity(nodeDir).material,
    admin: {
      certificateChain: dataFile(data.adminCertificate),
      privateKey: dataFile(data.adminKey),
      trustBundle: dataFile(data.caBundle),
    },
    async certificates() {
      const page = await authority.listCertificates(STORE_READER, { pageSize: 1000 });
      return page.items.map((item) => item.serial).sort();
    },
    async counter(name, labels) {
      const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
      const value = metric?.values.find((v) =>
        Object.entries(labels).every(([key, expected]) => v.labels[key] === expected),
      );
      return Number(value?.value ?? 0);
    },
    async close() {
      service.closeWatchers();
      await mtls.close(0);
      await control.close();
    },
  };
}
