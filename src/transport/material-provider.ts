// Material pushed in by code: the control plane's agent (after enrolment or
// renewal), the embedded CA's renewal timer and the file watcher all feed a
// MaterialProvider. set() is the single gate: the new set is validated as a
// whole and only then replaces the current one and is announced; an invalid
// set throws and changes nothing, so the previous material keeps serving.

import { messageOf } from '../errors.ts';
import type { MaterialSource, TlsMaterial } from '../pki/material.ts';
import { asMaterialError, checkMaterialShape } from './material-errors.ts';
import { type ValidatedMaterial, validateMaterial } from './validate-material.ts';

/** validateMaterial behind the shape check: every refusal is a SigilError. */
function validated(material: TlsMaterial): ValidatedMaterial {
  checkMaterialShape(material, 'TLS material');
  return asMaterialError('TLS material', () => validateMaterial(material));
}

export interface MaterialProviderOptions {
  /**
   * Called when a subscriber throws. A failing subscriber must neither stop the
   * others from receiving material nor undo a set() that succeeded. Default:
   * a process warning.
   */
  readonly onListenerError?: (error: unknown) => void;
}

type Listener = (material: TlsMaterial) => void;

export class MaterialProvider implements MaterialSource {
  #current: ValidatedMaterial;
  readonly #listeners = new Set<Listener>();
  readonly #onListenerError: (error: unknown) => void;

  /** Throws a SigilError when `initial` is inconsistent or expired. */
  constructor(initial: TlsMaterial, options: MaterialProviderOptions = {}) {
    this.#current = validated(initial);
    this.#onListenerError =
      options.onListenerError ??
      ((error) =>
        process.emitWarning(`a TLS material subscriber failed: ${messageOf(error)}`, 'SigilMaterialWarning'));
  }

  current(): TlsMaterial {
    return this.#current.material;
  }

  /** The current material with its parsed leaf, chain, trust bundle and CRLs. */
  currentValidated(): ValidatedMaterial {
    return this.#current;
  }

  subscribe(listener: Listener): () => void {
    // Wrapped so that subscribing the same function twice gives two subscriptions.
    const entry: Listener = (material) => listener(material);
    this.#listeners.add(entry);
    return () => {
      this.#listeners.delete(entry);
    };
  }

  /**
   * Validates `material` and, if it passes, makes it current and announces it.
   * Throws a SigilError otherwise, leaving the current material in place.
   */
  set(material: TlsMaterial): ValidatedMaterial {
    const checked = validated(material);
    this.#current = checked;
    for (const listener of [...this.#listeners]) {
      try {
        listener(checked.material);
      } catch (error) {
        this.#onListenerError(error);
      }
    }
    return checked;
  }
}
