#!/usr/bin/env python3
"""A grpcio client of firebuild's RootfsServer (/proto.RootfsServer/*), as a
peer sigil did not write, for test/guest/bootstrap-service.test.ts.

With grpc_tools (python3-grpc-tools) the stubs are generated from
proto-firebuild/proto/rootfs_server.proto; without it the three messages it
needs (Empty, CommandsResponse, PingRequest/PingResponse) are encoded by hand
in protobuf's wire format, and only grpcio (python3-grpcio) is required.

Reads one JSON object on stdin:
    {"target": "127.0.0.1:N", "serverName": "...", "roots": PEM, "cert": PEM,
     "key": PEM, "proto": "<dir holding proto/rootfs_server.proto>", "pingId": "..."}
and prints one JSON line:
    {"mode": "generated"|"hand-encoded", "modeReason": "...", "commands": [...], "pingId": "..."}
or {"error": {"code": "UNAVAILABLE", "details": "..."}}.
"""

import json
import sys
import tempfile

import grpc


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


def read_varint(data, pos):
    shift = 0
    result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def strings_of_field_1(data):
    """Every field-1 length-delimited value (repeated string command / string id)."""
    values = []
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        wire = key & 7
        if wire == 2:
            length, pos = read_varint(data, pos)
            value = data[pos:pos + length]
            pos += length
            if key >> 3 == 1:
                values.append(value.decode("utf-8"))
        elif wire == 0:
            _, pos = read_varint(data, pos)
        else:
            raise ValueError("unexpected wire type %d" % wire)
    return values


def hand_encoded(channel):
    identity = lambda b: b
    commands = channel.unary_unary("/proto.RootfsServer/Commands",
                                   request_serializer=identity, response_deserializer=identity)
    ping = channel.unary_unary("/proto.RootfsServer/Ping",
                               request_serializer=identity, response_deserializer=identity)

    def call_commands():
        return strings_of_field_1(commands(b"", timeout=20))

    def call_ping(ping_id):
        raw = ping_id.encode("utf-8")
        answer = strings_of_field_1(ping(b"\x0a" + varint(len(raw)) + raw, timeout=20))
        return answer[-1] if answer else ""

    return call_commands, call_ping


def generated(channel, proto_root):
    from grpc_tools import protoc  # noqa: PLC0415 (optional)

    out = tempfile.mkdtemp(prefix="sigil-rootfs-stubs-")
    code = protoc.main(["protoc", "-I" + proto_root, "--python_out=" + out,
                        "--grpc_python_out=" + out, "proto/rootfs_server.proto"])
    if code != 0:
        raise RuntimeError("grpc_tools.protoc exited %d" % code)
    sys.path.insert(0, out)
    from proto import rootfs_server_pb2, rootfs_server_pb2_grpc  # noqa: PLC0415

    stub = rootfs_server_pb2_grpc.RootfsServerStub(channel)

    def call_commands():
        return list(stub.Commands(rootfs_server_pb2.Empty(), timeout=20).command)

    def call_ping(ping_id):
        return stub.Ping(rootfs_server_pb2.PingRequest(id=ping_id), timeout=20).id

    return call_commands, call_ping


def main():
    request = json.loads(sys.stdin.read())
    credentials = grpc.ssl_channel_credentials(
        root_certificates=request["roots"].encode(),
        private_key=request["key"].encode(),
        certificate_chain=request["cert"].encode(),
    )
    channel = grpc.secure_channel(request["target"], credentials,
                                  options=[("grpc.ssl_target_name_override", request["serverName"])])
    mode, reason = "hand-encoded", ""
    try:
        call_commands, call_ping = generated(channel, request["proto"])
        mode = "generated"
    except Exception as error:  # noqa: BLE001 (any failure: fall back, and say why)
        reason = "%s: %s" % (type(error).__name__, error)
        call_commands, call_ping = hand_encoded(channel)
    try:
        commands = call_commands()
        ping_id = call_ping(request["pingId"])
    except grpc.RpcError as error:
        print(json.dumps({"error": {"code": error.code().name, "details": error.details()}}))
        return
    finally:
        channel.close()
    print(json.dumps({"mode": mode, "modeReason": reason, "commands": commands, "pingId": ping_id}))


if __name__ == "__main__":
    main()
