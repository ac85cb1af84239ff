// Default common names of the CAs sigil creates. Kept apart from
// ca-directory.ts so command definitions can show them without loading the
// certificate code.
export const DEFAULT_ROOT_NAME = 'sigil root CA';
export const DEFAULT_INTERMEDIATE_NAME = 'sigil intermediate CA';
