// Material that never changes: a certificate, key and trust bundle fixed at
// start-up, for tests, examples and short-lived tools. It is validated once,
// here, so a broken set fails at construction rather than at the first
// handshake.

import type { MaterialSource, TlsMaterial } from '../pki/material.ts';
import { asMaterialError, checkMaterialShape } from './material-errors.ts';
import { validateMaterial } from './validate-material.ts';

export class StaticMaterialSource implements MaterialSource {
  readonly #material: TlsMaterial;

  /** Throws a SigilError when the material is inconsistent or expired. */
  constructor(material: TlsMaterial) {
    checkMaterialShape(material, 'static TLS material');
    asMaterialError('static TLS material', () => validateMaterial(material));
    this.#material = material;
  }

  current(): TlsMaterial {
    return this.#material;
  }

  subscribe(_listener: (material: TlsMaterial) => void): () => void {
    return () => {}; // nothing ever changes, so there is nothing to announce
  }
}
