"""Schemaless protobuf decoding over messages serialized by the protobuf runtime itself."""

from __future__ import annotations

from google.protobuf import descriptor_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.dissector.protocols import protobuf


def test_a_real_message_becomes_a_field_number_tree() -> None:
    msg = descriptor_pb2.FileDescriptorProto(
        name="a.proto",
        package="pkg",
        dependency=["b.proto", "c.proto"],
        message_type=[descriptor_pb2.DescriptorProto(name="Thing")],
        options=descriptor_pb2.FileOptions(java_multiple_files=True, optimize_for=2),
    )
    tree = protobuf.decode(msg.SerializeToString())
    assert tree is not None
    assert tree[0] == {"field": 1, "wire": "len", "size": 7, "string": "a.proto"}
    assert [f["string"] for f in tree if f["field"] == 3] == ["b.proto", "c.proto"]
    (thing,) = [f for f in tree if f["field"] == 4]
    assert thing["message"] == [{"field": 1, "wire": "len", "size": 5, "string": "Thing"}]
    (options,) = [f for f in tree if f["field"] == 8]
    assert {(f["field"], f["value"]) for f in options["message"]} == {(10, 1), (9, 2)}


def test_fixed_width_and_negative_values_are_shown_raw_and_signed() -> None:
    opts = descriptor_pb2.UninterpretedOption(negative_int_value=-7, double_value=0.5)
    tree = protobuf.decode(opts.SerializeToString())
    assert tree is not None
    by = {f["field"]: f for f in tree}
    assert by[5]["signed"] == -7  # int64 varint in two's complement
    assert by[6]["wire"] == "i64" and by[6]["value"] == 0x3FE0000000000000  # 0.5 as IEEE 754 bits


def test_bytes_that_are_not_protobuf_give_none() -> None:
    assert protobuf.decode(b"\x0a\x05ab") is None  # length runs past the end
    assert protobuf.decode(b"\x00\x01") is None  # field number 0
    assert protobuf.decode(b"\xff" * 11) is None  # overlong varint


def test_deep_nesting_stops_at_the_depth_limit_without_error() -> None:
    data = b""
    for _ in range(protobuf.MAX_DEPTH + 20):
        data = b"\x0a" + bytes([len(data)]) + data if len(data) < 128 else data
    assert protobuf.decode(data) is not None


def test_repeated_bytes_follows_a_field_path() -> None:
    fds = descriptor_pb2.FileDescriptorSet(
        file=[
            descriptor_pb2.FileDescriptorProto(name="x.proto"),
            descriptor_pb2.FileDescriptorProto(name="y.proto"),
        ]
    )
    files = protobuf.repeated_bytes(fds.SerializeToString(), (1,))
    assert [descriptor_pb2.FileDescriptorProto.FromString(f).name for f in files] == ["x.proto", "y.proto"]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data: bytes) -> None:
    protobuf.decode(data)
    protobuf.repeated_bytes(data, (4, 1))
