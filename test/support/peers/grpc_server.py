#!/usr/bin/env python3
"""A plain Python gRPC peer (grpcio, BoringSSL inside) for sigil's tests.

Two modes; each reads one JSON object on stdin (PEM strings inline, so no
files are needed).

server (the default):

    {"roots": PEM, "cert": PEM chain (optional), "key": PEM (optional), "port": 0}

  Listens on 127.0.0.1 with mutual TLS: client certificates are required and
  verified against "roots" (grpc.ssl_server_credentials(...,
  require_client_auth=True)). Without "cert"/"key" it makes a throwaway
  self-signed P-256 server certificate for localhost and 127.0.0.1 (needs
  cryptography). When ready it prints one JSON line on stdout:

    {"port": N, "serverCertificate": PEM the server presents}

  and serves until stdin reaches end of file (the parent closing it, or
  dying) or SIGTERM. The generic unary method /peer.Echo/Who takes and
  returns raw bytes; the answer is JSON describing the verified client from
  context.auth_context(): {"peer", "transportSecurityType", "commonName",
  "subjectAlternativeNames", "pemCert", "peerIdentities", "peerIdentityKey",
  "request"}.

client (`grpc_server.py client`):

    {"target": "127.0.0.1:N", "roots": PEM, "cert": PEM chain, "key": PEM,
     "serverName": "optional TLS name override", "method": "/peer.Echo/Who",
     "request": "optional base64 bytes", "timeout": seconds}

  Calls the method once over TLS with the client certificate and prints one
  JSON line: {"ok": true, "response": <the reply: JSON when it is JSON,
  otherwise {"base64": ...}>} or {"ok": false, "code": "UNAVAILABLE",
  "details": "..."}. It always exits 0 once it has printed its verdict.
"""

import base64
import datetime
import json
import signal
import sys
import threading
from concurrent import futures

import grpc


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _values(auth, key):
    return [_text(v) for v in auth.get(key, [])]


def _who(request, context):
    auth = context.auth_context() or {}
    security = _values(auth, "transport_security_type")
    answer = {
        "peer": context.peer(),
        "transportSecurityType": security[0] if security else None,
        "commonName": (_values(auth, "x509_common_name") or [None])[0],
        "subjectAlternativeNames": _values(auth, "x509_subject_alternative_name"),
        "pemCert": (_values(auth, "x509_pem_cert") or [None])[0],
        "peerIdentities": [_text(v) for v in (context.peer_identities() or [])],
        "peerIdentityKey": _text(context.peer_identity_key()),
        "authContextKeys": sorted(_text(k) for k in auth.keys()),
        "request": base64.b64encode(request).decode("ascii"),
    }
    return json.dumps(answer).encode("utf-8")


def _self_signed():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "python grpc peer")])
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert_pem, key_pem


def serve(config):
    roots = config["roots"].encode("ascii")
    if config.get("cert") and config.get("key"):
        cert_pem, key_pem = config["cert"].encode("ascii"), config["key"].encode("ascii")
    else:
        cert_pem, key_pem = _self_signed()
    credentials = grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=roots, require_client_auth=True
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "peer.Echo", {"Who": grpc.unary_unary_rpc_method_handler(_who)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:%d" % int(config.get("port") or 0), credentials)
    if port == 0:
        raise SystemExit("grpc_server.py: could not listen on 127.0.0.1:%s" % config.get("port"))
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_stdin():
        sys.stdin.read()  # returns at end of file: the parent closed our stdin or died
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    sys.stdout.write(json.dumps({"port": port, "serverCertificate": cert_pem.decode("ascii")}) + "\n")
    sys.stdout.flush()
    while not stop.wait(0.5):
        pass
    server.stop(0).wait(5)


def call(config):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=config["roots"].encode("ascii"),
        private_key=config["key"].encode("ascii") if config.get("key") else None,
        certificate_chain=config["cert"].encode("ascii") if config.get("cert") else None,
    )
    options = []
    if config.get("serverName"):
        options.append(("grpc.ssl_target_name_override", config["serverName"]))
    request = base64.b64decode(config.get("request") or "")
    method = config.get("method") or "/peer.Echo/Who"
    with grpc.secure_channel(config["target"], credentials, options=options) as channel:
        stub = channel.unary_unary(method)  # no serializers: raw bytes in and out
        try:
            reply = stub(request, timeout=float(config.get("timeout") or 10))
        except grpc.RpcError as e:
            return {"ok": False, "code": e.code().name, "details": e.details() or ""}
    try:
        response = json.loads(reply.decode("utf-8"))
    except ValueError:
        response = {"base64": base64.b64encode(reply).decode("ascii")}
    return {"ok": True, "response": response}


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "server"
    if mode == "server":
        serve(json.loads(sys.stdin.readline()))
    elif mode == "client":
        result = call(json.loads(sys.stdin.read()))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    elif mode == "hello":
        sys.stdout.write(json.dumps({"grpcio": grpc.__version__, "python": sys.version.split()[0]}) + "\n")
    else:
        raise SystemExit("usage: grpc_server.py [server|client|hello] < config.json")


if __name__ == "__main__":
    main()
