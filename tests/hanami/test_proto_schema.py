"""apps/hanami/proto/messages.py builds the Hanami messages by hand (no protoc here) from a
FileDescriptorProto that must mirror hanami_messages.proto, the upstream schema the SDK compiles.

Two checks that need neither protoc nor the code under test to agree with itself: the .proto is
read by a small parser below and compared with the built descriptors field by field (name,
number, type, repeated, packed); and samples encoded by the built classes are decoded by a
wire-format decoder written here from the .proto alone.
"""

import re
import struct
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from apps.hanami.proto import messages

PROTO = Path(messages.__file__).with_name("hanami_messages.proto")

# .proto scalar type -> (descriptor type, wire type)
SCALARS = {
    "string": (FieldDescriptor.TYPE_STRING, 2),
    "bytes": (FieldDescriptor.TYPE_BYTES, 2),
    "bool": (FieldDescriptor.TYPE_BOOL, 0),
    "uint64": (FieldDescriptor.TYPE_UINT64, 0),
    "float": (FieldDescriptor.TYPE_FLOAT, 5),
}
FIELD = re.compile(
    r"^(?P<repeated>repeated\s+)?(?P<type>\w+)\s+(?P<name>\w+)\s*=\s*(?P<number>\d+)"
    r"\s*(?:\[(?P<options>[^\]]*)\])?\s*;$"
)


def parse_proto(text: str) -> tuple[dict, dict]:
    """(messages, enums) of a flat proto3 file: message -> {field name: (number, type,
    repeated, packed)}, enum -> {value name: number}. Enough for hanami_messages.proto; anything
    it does not understand fails the test rather than being skipped."""
    text = re.sub(r"//[^\n]*", "", text)
    found_messages: dict[str, dict] = {}
    enums: dict[str, dict] = {}
    for kind, name, body in re.findall(r"\b(message|enum)\s+(\w+)\s*\{([^}]*)\}", text):
        statements = [s.strip() + ";" for s in body.split(";") if s.strip()]
        if kind == "enum":
            values = [re.fullmatch(r"(\w+)\s*=\s*(\d+)\s*;", s) for s in statements]
            assert all(values), f"enum {name}: {statements}"
            enums[name] = {m[1]: int(m[2]) for m in values}
            continue
        fields = {}
        for statement in statements:
            match = FIELD.match(statement)
            assert match, f"message {name}: cannot read {statement!r}"
            options = match["options"] or ""
            fields[match["name"]] = (
                int(match["number"]),
                match["type"],
                bool(match["repeated"]),
                "packed = true" in options.replace("packed=true", "packed = true"),
            )
        found_messages[name] = fields
    return found_messages, enums


SCHEMA, ENUMS = parse_proto(PROTO.read_text())


def test_the_parser_reads_the_whole_file():
    assert set(SCHEMA) == {"ClusterIO_Message", "FileUpload_Message", "FileUploadResponse_Message"}
    assert ENUMS == {"ClusterProcessType": {"REQUEST_TYPE": 0, "TRAIN_TYPE": 1}}
    assert SCHEMA["ClusterIO_Message"]["values"] == (5, "float", True, True)


def test_the_package_is_the_protos():
    package = re.search(r"^\s*package\s+(\w+)\s*;", PROTO.read_text(), re.M)[1]
    assert messages.PACKAGE == package
    assert messages.ClusterIO_Message.DESCRIPTOR.full_name == f"{package}.ClusterIO_Message"


@pytest.mark.parametrize("name", sorted(SCHEMA))
def test_each_message_matches_the_proto(name):
    descriptor = getattr(messages, name).DESCRIPTOR
    built = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_ENUM:
            type_name = field.enum_type.name
        else:
            names = {t: k for k, (t, _wire) in SCALARS.items()}
            type_name = names.get(field.type, f"descriptor type {field.type}")
        repeated = field.is_repeated
        built[field.name] = (field.number, type_name, repeated, repeated and field.is_packed)
    assert built == SCHEMA[name]


def test_the_enum_matches_the_proto():
    assert {"REQUEST_TYPE": messages.REQUEST_TYPE, "TRAIN_TYPE": messages.TRAIN_TYPE} == ENUMS[
        "ClusterProcessType"
    ]


# --- a reference decoder, from the .proto alone ----------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def decode(name: str, data: bytes) -> dict:
    """Decode `data` as message `name` of the parsed .proto (proto3: absent = default)."""
    by_number = {number: (field, spec) for field, (number, *spec) in SCHEMA[name].items()}
    out: dict = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        field, (type_name, repeated, packed) = by_number[number]
        expected_wire = SCALARS[type_name][1] if type_name in SCALARS else 0
        if wire == 0:
            raw, pos = _varint(data, pos)
        elif wire == 5:
            raw, pos = data[pos : pos + 4], pos + 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            raw, pos = data[pos : pos + length], pos + length
        else:
            raise AssertionError(f"unexpected wire type {wire} for {field}")
        if repeated and packed:
            assert wire == 2 and type_name == "float"
            out.setdefault(field, []).extend(struct.unpack(f"<{len(raw) // 4}f", raw))
            continue
        assert wire == expected_wire, f"{field}: wire type {wire}, the .proto says {expected_wire}"
        if type_name == "string":
            value = raw.decode()
        elif type_name == "bool":
            value = bool(raw)
        elif type_name == "float":
            value = struct.unpack("<f", raw)[0]
        else:
            value = raw  # bytes, uint64, enum
        if repeated:
            out.setdefault(field, []).append(value)
        else:
            out[field] = value
    return out


def test_a_cluster_io_message_decodes_as_the_proto_says():
    sample = messages.ClusterIO_Message(
        brickName="input",
        isLast=True,
        processType=messages.TRAIN_TYPE,
        numberOfValues=3,
        values=[0.5, -1.25, 3.0],
    )
    assert decode("ClusterIO_Message", sample.SerializeToString()) == {
        "brickName": "input",
        "isLast": True,
        "processType": ENUMS["ClusterProcessType"]["TRAIN_TYPE"],
        "numberOfValues": 3,
        "values": [0.5, -1.25, 3.0],
    }


def test_the_upload_messages_decode_as_the_proto_says():
    upload = messages.FileUpload_Message(position=2**40 + 7, data=b"\x00\x01payload")
    assert decode("FileUpload_Message", upload.SerializeToString()) == {
        "position": 2**40 + 7,
        "data": b"\x00\x01payload",
    }
    answer = messages.FileUploadResponse_Message(success=True, errorMessage="disk full")
    assert decode("FileUploadResponse_Message", answer.SerializeToString()) == {
        "success": True,
        "errorMessage": "disk full",
    }


def test_a_hand_encoded_message_parses():
    """The other direction: bytes written from the .proto's numbers parse in the built class."""
    name = b"request"
    floats = struct.pack("<2f", 1.5, 2.5)
    data = (
        bytes([1 << 3 | 2, len(name)])
        + name
        + bytes([3 << 3 | 0, ENUMS["ClusterProcessType"]["REQUEST_TYPE"]])
        + bytes([4 << 3 | 0, 2])
        + bytes([5 << 3 | 2, len(floats)])
        + floats
    )
    parsed = messages.ClusterIO_Message.FromString(data)
    assert (parsed.brickName, parsed.numberOfValues, list(parsed.values)) == (
        "request",
        2,
        [1.5, 2.5],
    )
    assert parsed.processType == messages.REQUEST_TYPE and not parsed.isLast
