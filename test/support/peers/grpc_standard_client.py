#!/usr/bin/env python3
"""A plain grpcio client (Debian's python3-grpcio) for the standard gRPC
services: grpc.health.v1.Health and server reflection (v1 and v1alpha).

Debian ships neither grpcio-health-checking nor grpcio-reflection, so the
messages are built and read by hand (protobuf wire format); the
FileDescriptorProtos that reflection returns are parsed with python3-protobuf's
descriptor_pb2 when it is installed, as grpcurl would parse them.

Reads one JSON object on stdin:

    {"target": "127.0.0.1:N", "roots": PEM, "cert": PEM (optional),
     "key": PEM (optional), "timeout": seconds,
     "steps": [{"op": "check", "service": ""},
               {"op": "watch", "service": "", "messages": 1},
               {"op": "list", "version": "v1"},
               {"op": "symbol", "version": "v1alpha", "symbol": "sigil.v1.Admin"}]}

and prints one JSON line: {"results": [...]} with, per step, either
{"ok": true, ...} or {"ok": false, "code": "UNAUTHENTICATED", "details": "..."}.
"""

import json
import sys

import grpc

STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def string_field(number, text):
    data = text.encode("utf-8")
    return varint((number << 3) | 2) + varint(len(data)) + data


def read_varint(data, pos):
    shift = 0
    value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def fields(data):
    """Field number -> list of values (ints for varints, bytes for length-delimited)."""
    out = {}
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(data, pos)
        elif wire == 2:
            length, pos = read_varint(data, pos)
            value = data[pos : pos + length]
            pos += length
        elif wire == 1:
            value = data[pos : pos + 8]
            pos += 8
        elif wire == 5:
            value = data[pos : pos + 4]
            pos += 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
        out.setdefault(number, []).append(value)
    return out


def health_status(reply):
    return STATUS_NAMES.get((fields(reply).get(1) or [0])[0], "?")


def describe_files(blobs):
    try:
        from google.protobuf import descriptor_pb2
    except ImportError:
        return {"parsed": False, "count": len(blobs)}
    files = []
    for blob in blobs:
        proto = descriptor_pb2.FileDescriptorProto.FromString(blob)
        files.append(
            {
                "name": proto.name,
                "package": proto.package,
                "services": {
                    "%s.%s" % (proto.package, s.name): [m.name for m in s.method] for s in proto.service
                },
                "messages": ["%s.%s" % (proto.package, m.name) for m in proto.message_type],
            }
        )
    return {"parsed": True, "files": files}


def reflection(channel, version, request, timeout):
    method = "/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % version
    stream = channel.stream_stream(method)
    replies = list(stream(iter([request]), timeout=timeout))
    if len(replies) != 1:
        raise ValueError("expected one reflection reply, got %d" % len(replies))
    reply = fields(replies[0])
    if 7 in reply:
        error = fields(reply[7][0])
        return {
            "ok": True,
            "error": {
                "code": (error.get(1) or [0])[0],
                "message": (error.get(2) or [b""])[0].decode("utf-8", "replace"),
            },
        }
    if 6 in reply:
        services = [fields(s)[1][0].decode("utf-8") for s in fields(reply[6][0]).get(1, [])]
        return {"ok": True, "services": services}
    if 4 in reply:
        blobs = fields(reply[4][0]).get(1, [])
        return {"ok": True, **describe_files(blobs)}
    return {"ok": True, "fields": sorted(reply.keys())}


def step(channel, spec, timeout):
    op = spec["op"]
    if op == "check":
        stub = channel.unary_unary("/grpc.health.v1.Health/Check")
        reply = stub(string_field(1, spec.get("service", "")), timeout=timeout)
        return {"ok": True, "status": health_status(reply)}
    if op == "watch":
        stub = channel.unary_stream("/grpc.health.v1.Health/Watch")
        call = stub(string_field(1, spec.get("service", "")), timeout=timeout)
        statuses = []
        for reply in call:
            statuses.append(health_status(reply))
            if len(statuses) >= int(spec.get("messages", 1)):
                break
        call.cancel()
        return {"ok": True, "statuses": statuses}
    if op == "list":
        return reflection(channel, spec.get("version", "v1"), string_field(7, "*"), timeout)
    if op == "symbol":
        return reflection(channel, spec.get("version", "v1"), string_field(4, spec["symbol"]), timeout)
    raise ValueError("unknown op %r" % op)


def main():
    config = json.loads(sys.stdin.read())
    credentials = grpc.ssl_channel_credentials(
        root_certificates=config["roots"].encode("ascii"),
        private_key=config["key"].encode("ascii") if config.get("key") else None,
        certificate_chain=config["cert"].encode("ascii") if config.get("cert") else None,
    )
    timeout = float(config.get("timeout") or 10)
    results = []
    with grpc.secure_channel(config["target"], credentials) as channel:
        for spec in config["steps"]:
            try:
                results.append(step(channel, spec, timeout))
            except grpc.RpcError as e:
                results.append({"ok": False, "code": e.code().name, "details": e.details() or ""})
    sys.stdout.write(json.dumps({"grpcio": grpc.__version__, "results": results}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
