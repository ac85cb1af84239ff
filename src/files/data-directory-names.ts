// The names of what a server's data directory holds: one list for the server
// that writes them (server/data-directory.ts, server/store-key.ts) and what
// reads them for operator commands (cli/client-context.ts,
// server/local-authority.ts). Kept here, below both, because a client may not
// import the server.

/** The data directory `sigil server` and the operator commands use when none is given. */
export const DEFAULT_DATA_DIR = '.sigil';
/** Where the server is and who it is (server/data-directory.ts ServerInfoFile). */
export const SERVER_INFO_FILE = 'server.json';
/** The bootstrap admin certificate and its intermediate (0600). */
export const ADMIN_CERTIFICATE_FILE = 'admin.pem';
/** The bootstrap admin's private key (0600). */
export const ADMIN_KEY_FILE = 'admin.key';
/** The trust bundle's roots: what clients pin and trust. */
export const CA_BUNDLE_FILE = 'ca.pem';
/** This replica's ID, fixed at first start. */
export const REPLICA_ID_FILE = 'replica-id';
/** The key that encrypts the CA keys in the store (0600; server/store-key.ts). */
export const STORE_KEY_FILE = 'store.key';
/** The bearer token of the HTTP side's admin endpoints (0600). */
export const HTTP_ADMIN_TOKEN_FILE = 'http-admin.token';
