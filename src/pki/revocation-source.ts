// Where transport learns which certificates are revoked. Transport never
// reads the store: the control plane (or a CRL file, or a test) feeds a
// RevocationSource and transport enforces it on handshakes, on every call,
// and by closing live connections.

export interface RevocationSource {
  /** Serial in sigil's canonical form: lower-case hex, no leading zeros. */
  isRevoked(serialHex: string): boolean;
  /** The listener gets the serials newly revoked; returns a function that unsubscribes. */
  subscribe(listener: (revokedSerials: readonly string[]) => void): () => void;
}
