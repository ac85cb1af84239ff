// Image references as `sigil image import --tag` and workload creation name
// them: `org/name:version`, a subset of OCI's reference grammar without a
// registry host or a digest. Lower-case name components separated by '/',
// then a required ':' version. The store never uses a reference as a path
// (images live under random IDs), but a reference is still refused before
// anything is touched when it could look like one ('..', '/' at either end).

import { invalid } from '../errors.ts';

/** OCI's limit for a repository name. */
export const MAX_IMAGE_NAME_LENGTH = 255;
/** OCI's limit for a tag. */
export const MAX_IMAGE_TAG_LENGTH = 128;

// OCI: path-component = alpha-numeric (separator alpha-numeric)*, separator = [_.] | __ | [-]+
const NAME_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

export interface ImageReference {
  /** `org/name` */
  readonly name: string;
  /** `version` */
  readonly tag: string;
  /** `org/name:version`, exactly as given */
  readonly reference: string;
}

/** A reference quoted for a one-line message, cut when long. */
function quoted(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text);
}

/** Parses `org/name:version`, refusing (invalid_argument) anything else with the reason. */
export function parseImageReference(text: unknown): ImageReference {
  if (typeof text !== 'string' || text === '')
    throw invalid('image: expected a reference like org/name:version');
  const what = `image ${quoted(text)}`;
  if (text.length > MAX_IMAGE_NAME_LENGTH + 1 + MAX_IMAGE_TAG_LENGTH) {
    throw invalid(`${what}: longer than ${MAX_IMAGE_NAME_LENGTH + 1 + MAX_IMAGE_TAG_LENGTH} characters`);
  }
  const colon = text.indexOf(':');
  if (colon === -1) throw invalid(`${what}: needs a :version, as in org/name:version`);
  const name = text.slice(0, colon);
  const tag = text.slice(colon + 1);
  if (name.length > MAX_IMAGE_NAME_LENGTH) {
    throw invalid(`${what}: the name is longer than ${MAX_IMAGE_NAME_LENGTH} characters`);
  }
  for (const component of name.split('/')) {
    if (!NAME_COMPONENT.test(component)) {
      throw invalid(
        `${what}: name component ${quoted(component)} must be lower-case letters and digits, joined by '.', '_', '__' or '-'`,
      );
    }
  }
  if (tag.length > MAX_IMAGE_TAG_LENGTH) {
    throw invalid(`${what}: the version is longer than ${MAX_IMAGE_TAG_LENGTH} characters`);
  }
  if (!TAG.test(tag)) {
    throw invalid(
      `${what}: the version must be letters, digits, '_', '.' and '-', not starting with '.' or '-'`,
    );
  }
  return { name, tag, reference: text };
}
