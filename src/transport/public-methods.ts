// Methods callable without a client certificate, on the same port as
// everything else. sigil's only such methods are the enrolment entry points:
// a node that has no certificate yet must be able to ask for one. The TLS
// session is still server-authenticated (the client pins the CA by
// fingerprint); only the client side is anonymous.
//
// How MtlsServer uses this, when given `publicMethods`:
//   - the TLS server requests a client certificate but lets a handshake
//     without one complete (rejectUnauthorized: false); a certificate that WAS
//     presented and failed verification still gets the connection destroyed at
//     'secureConnection', reported like any refused handshake;
//   - publicMethodsInterceptor, right after metrics, fails every call to a
//     method outside the list on a connection without a client certificate,
//     with UNAUTHENTICATED, before the handler runs or a message is read;
//   - exemptAnonymousPublicCalls lets the anonymous calls to public methods
//     past the revocation interceptor (which refuses calls without a
//     certificate); calls that carry a certificate are checked as always.
// Whether a call has a certificate is read from the connection, never from
// metadata: a verified chain recorded at handshake, or the peer certificate
// of the TLS socket (which, on this server, exists only once verified).
import * as grpc from '@grpc/grpc-js';
import { invalid } from '../errors.ts';
import { connectionForCall, type PeerCall } from './connection-registry.ts';

export const CLIENT_CERTIFICATE_REQUIRED = 'this method requires a client certificate';

const METHOD_PATH = /^\/[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\/[A-Za-z_][A-Za-z0-9_]*$/;

/** Validates full method paths ("/package.Service/Method"; no wildcards) into a set. */
export function publicMethodSet(methods: readonly string[]): ReadonlySet<string> {
  if (!Array.isArray(methods)) throw invalid('publicMethods must be an array of method paths');
  for (const method of methods) {
    if (typeof method !== 'string' || !METHOD_PATH.test(method)) {
      throw invalid(
        `publicMethods: invalid method path ${JSON.stringify(method)}: expected "/package.Service/Method" (no wildcards)`,
      );
    }
  }
  return new Set(methods);
}

/** True when the call's connection carries a client certificate (verified, on sigil's server). */
export function callHasClientCertificate(call: PeerCall): boolean {
  if (connectionForCall(call)) return true;
  return call.getAuthContext().sslPeerCertificate?.raw !== undefined;
}

/**
 * Fails every call to a method outside `publicMethods` that arrives without
 * a client certificate: UNAUTHENTICATED, sent when the metadata arrives, so
 * the handler never starts.
 */
export function publicMethodsInterceptor(publicMethods: ReadonlySet<string>): grpc.ServerInterceptor {
  return (methodDescriptor, call) => {
    // Public methods need nothing from this interceptor: pass everything through.
    if (publicMethods.has(methodDescriptor.path)) return new grpc.ServerInterceptingCall(call);
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            if (callHasClientCertificate(call)) {
              nextMetadata(metadata);
              return;
            }
            call.sendStatus({ code: grpc.status.UNAUTHENTICATED, details: CLIENT_CERTIFICATE_REQUIRED });
          },
        });
      },
    });
  };
}

/**
 * `interceptor`, except for calls to a public method that carry no client
 * certificate: those skip it. Used around interceptors that refuse anonymous
 * calls by design (revocation), so that the public methods stay reachable.
 */
export function exemptAnonymousPublicCalls(
  interceptor: grpc.ServerInterceptor,
  publicMethods: ReadonlySet<string>,
): grpc.ServerInterceptor {
  return (methodDescriptor, call) => {
    if (publicMethods.has(methodDescriptor.path) && !callHasClientCertificate(call)) {
      return new grpc.ServerInterceptingCall(call);
    }
    return interceptor(methodDescriptor, call);
  };
}
