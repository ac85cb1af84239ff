#!/usr/bin/env python3
"""pyca/cryptography as an independent peer for sigil's tests.

Reads newline-delimited JSON requests on stdin and writes one JSON line per
request on stdout, in order, until stdin closes.

Request (the same as verify.go's):

    {"roots": [PEM...], "intermediates": [PEM...], "leaf": PEM,
     "usage": "client"|"server"|"any", "dnsName": "optional", "at": "optional RFC3339"}

or {"op": "hello"}, answered with what this interpreter can do.

Every certificate is always parsed and its extensions listed (all that
cryptography 38, Debian's, can do). When cryptography has the path-validation
API (cryptography.x509.verification, 42 and later) the chain is verified too:
the client verifier for "client", the server verifier for "server" (needs
dnsName, which may be an IP address), and for "any" the client verifier with
the end-entity's extendedKeyUsage left unchecked.

Response:

    {"ok": bool, "error": str, "verifier": "pyca-<v>" | "parse-only-<v>",
     "parsed": bool, "verified": bool | null,
     "chains": [[subject...]], "leafUris": [...], "leafExtensionOids": [...],
     "certificates": [{"role", "subject", "extensionOids", "uris"}]}

"verified" is null when no verification was attempted (parse-only, or a parse
failure). "ok" is "verified" when verification ran, and "parsed" otherwise, so
a parse-only "ok" never means a chain was accepted: check "verifier".
pyca's verifier refuses chains with URI name constraints ("unsupported name
constraint"); that is reported as it is.
"""

import datetime
import ipaddress
import json
import re
import sys

import cryptography
from cryptography import x509

try:
    from cryptography.x509 import verification as _verification
except ImportError:  # cryptography < 42: parsing only
    _verification = None

VERSION = cryptography.__version__
VERIFIER = ("pyca-" if _verification is not None else "parse-only-") + VERSION

PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL)


class ParseFailure(Exception):
    pass


def parse_all(role, pems, infos):
    out = []
    for i, text in enumerate(pems):
        if not isinstance(text, str):
            raise ParseFailure("%s %d: not a PEM string" % (role, i))
        blocks = PEM_BLOCK.findall(text)
        if not blocks:
            raise ParseFailure("%s %d: no CERTIFICATE block in PEM" % (role, i))
        for block in blocks:
            try:
                cert = x509.load_pem_x509_certificate(block.encode("ascii"))
                info = describe(role, cert)  # parses the extensions (lazy in cryptography)
            except Exception as e:  # any parse error is a verdict, not a crash
                raise ParseFailure("%s %d: %s: %s" % (role, i, type(e).__name__, e)) from e
            infos.append(info)
            out.append(cert)
    return out


def describe(role, cert):
    extensions = cert.extensions
    return {
        "role": role,
        "subject": cert.subject.rfc4514_string(),
        "extensionOids": [ext.oid.dotted_string for ext in extensions],
        "uris": uris(extensions),
    }


def uris(extensions):
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def parse_time(text):
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    t = datetime.datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.astimezone(datetime.timezone.utc)


def subject_of(name):
    try:
        return _verification.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return _verification.DNSName(name)


def run_verifier(req, roots, intermediates, leaf):
    """Returns the verified chain (a list of certificates); raises on refusal."""
    v = _verification
    builder = v.PolicyBuilder().store(v.Store(roots))
    if req.get("at"):
        builder = builder.time(parse_time(req["at"]))
    usage = req.get("usage")
    if usage == "server":
        name = req.get("dnsName")
        if not name:
            raise ValueError("pyca's server verifier needs dnsName (a DNS name or an IP address)")
        return list(builder.build_server_verifier(subject_of(name)).verify(leaf, intermediates))
    if usage == "any":
        ee = v.ExtensionPolicy.webpki_defaults_ee().may_be_present(
            x509.ExtendedKeyUsage, v.Criticality.AGNOSTIC, None
        )
        builder = builder.extension_policies(ca_policy=v.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
    return list(builder.build_client_verifier().verify(leaf, intermediates).chain)


def handle(line):
    res = {
        "ok": False,
        "error": "",
        "verifier": VERIFIER,
        "parsed": False,
        "verified": None,
        "chains": [],
        "leafUris": [],
        "leafExtensionOids": [],
        "certificates": [],
    }
    try:
        req = json.loads(line)
        if not isinstance(req, dict):
            raise ValueError("a request is a JSON object")
    except ValueError as e:
        res["error"] = "bad request: %s" % e
        return res
    if req.get("op") == "hello":
        return {
            "ok": True,
            "verifier": VERIFIER,
            "cryptography": VERSION,
            "canVerify": _verification is not None,
            "python": sys.version.split()[0],
            "executable": sys.executable,
        }
    if req.get("usage") not in ("client", "server", "any"):
        res["error"] = "bad request: usage must be client, server or any, not %r" % (req.get("usage"),)
        return res

    infos = res["certificates"]
    try:
        leaf = parse_all("leaf", [req.get("leaf")], infos)[0]
        intermediates = parse_all("intermediate", req.get("intermediates") or [], infos)
        roots = parse_all("root", req.get("roots") or [], infos)
    except ParseFailure as e:
        res["error"] = str(e)
        return res
    res["parsed"] = True
    res["leafUris"] = infos[0]["uris"]
    res["leafExtensionOids"] = infos[0]["extensionOids"]
    if _verification is None:
        res["ok"] = True
        return res
    try:
        chain = run_verifier(req, roots, intermediates, leaf)
    except Exception as e:  # VerificationError, and ValueError/TypeError for what pyca refuses to build
        res["verified"] = False
        res["error"] = str(e) if type(e).__name__ == "VerificationError" else "%s: %s" % (type(e).__name__, e)
        return res
    res["verified"] = True
    res["ok"] = True
    res["chains"] = [[c.subject.rfc4514_string() for c in chain]]
    return res


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        sys.stdout.write(json.dumps(handle(line)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
