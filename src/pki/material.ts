// TLS material: what a peer presents (certificate chain + key) and what it
// trusts (CA bundle, CRLs). Every source of material — the embedded CA, PEM
// files on disk, the control plane's agent — hands out the same shape, and
// material is validated as a whole before anyone uses it, so a half-written
// or mismatched set can never replace a working one.

export interface TlsMaterial {
  /** PEM, leaf first, then any intermediates (not the root). */
  readonly certificateChain: string;
  /** PEM private key of the leaf. */
  readonly privateKey: string;
  /** PEM trusted CA certificates; during CA rotation it holds old and new. */
  readonly trustBundle: string;
  /** PEM CRLs; when present, every CA level in the bundle needs one (an empty CRL is fine). */
  readonly crls?: readonly string[];
}

/** Something that has current material and announces replacements. */
export interface MaterialSource {
  current(): TlsMaterial;
  /** The listener gets each new validated material; returns a function that unsubscribes. */
  subscribe(listener: (material: TlsMaterial) => void): () => void;
}
