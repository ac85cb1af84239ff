// What is read of a peer certificate's structure beyond Node's
// X509Certificate: the shared shape of the strict DER fast path
// (certificate-structure-der.ts) and the asn1js reading (certificate-parts.ts).

/** One extension as the certificate spells it. */
export interface RawExtension {
  readonly oid: string;
  readonly critical: boolean;
  /** The extnValue contents (DER of the extension's own structure); a view into the certificate. */
  readonly value: Uint8Array;
}

/** What asn1js read of the certificate's structure. */
export interface CertificateStructure {
  readonly version: number;
  readonly issuerEmpty: boolean;
  readonly subjectEmpty: boolean;
  readonly signatureAlgorithmsMatch: boolean;
  /** How many extensions the certificate has (readable or not). */
  readonly extensionCount: number;
  /** The extensions in certificate order, up to the first whose structure is malformed. */
  readonly extensions: readonly RawExtension[];
  /** Why the extension after the last of `extensions` could not be read, if one could not. */
  readonly extensionError?: Error;
  /**
   * Read by the strict DER fast path (certificate-structure-der.ts): plain
   * strict DER of the shapes @peculiar/asn1-x509 decodes. False: asn1js read it.
   */
  readonly strictDer: boolean;
}
