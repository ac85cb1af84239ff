// Store events: the payload codec (PostgreSQL carries it in NOTIFY) and the
// subscribers of one store object.
import { messageOf, SigilError } from '../errors.ts';
import { NODE_STATES, type NodeState, type StoreEvent } from './store.ts';

/** PostgreSQL refuses NOTIFY payloads of 8000 bytes or more. */
const MAX_EVENT_BYTES = 7999;

export function encodeEvent(event: StoreEvent): string {
  const json = JSON.stringify(event);
  if (Buffer.byteLength(json) > MAX_EVENT_BYTES)
    throw new SigilError('internal', 'store event too large to publish');
  return json;
}

/** The event in a payload, or null when it is not one this build understands. */
export function decodeEvent(payload: string | undefined): StoreEvent | null {
  if (payload === undefined) return null;
  let value: unknown;
  try {
    value = JSON.parse(payload);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  if (v.kind === 'revocation' && Array.isArray(v.serials) && v.serials.every((s) => typeof s === 'string'))
    return Object.freeze({ kind: 'revocation', serials: Object.freeze([...v.serials]) });
  if (v.kind === 'node' && typeof v.nodeId === 'string' && NODE_STATES.includes(v.state as NodeState))
    return Object.freeze({ kind: 'node', nodeId: v.nodeId, state: v.state as NodeState });
  if (v.kind === 'ca' && typeof v.caId === 'string') return Object.freeze({ kind: 'ca', caId: v.caId });
  return null;
}

/**
 * The subscribers of one store object. A listener that throws is reported to
 * `onError` and does not stop the others (nor fail the write that caused the
 * event: events are published after the commit).
 */
export class Listeners {
  private readonly listeners = new Set<{ readonly listener: (event: StoreEvent) => void }>();
  private readonly onError: (error: Error) => void;

  constructor(onError: (error: Error) => void) {
    this.onError = onError;
  }

  subscribe(listener: (event: StoreEvent) => void): () => void {
    const entry = { listener };
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  emit(event: StoreEvent): void {
    for (const { listener } of [...this.listeners]) {
      try {
        listener(event);
      } catch (error) {
        this.onError(
          new SigilError('internal', `a store event listener threw: ${messageOf(error)}`, { cause: error }),
        );
      }
    }
  }
}

/** The default onError: a process warning (stderr), never silence. */
export function warn(error: Error): void {
  process.emitWarning(error.message, { code: 'SIGIL_STORE' });
}
