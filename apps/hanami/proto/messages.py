"""The Hanami websocket messages, built at runtime (no protoc) from a FileDescriptorProto that
mirrors `hanami_messages.proto` in this folder.

The wire format depends only on field numbers and types, so these classes interoperate with the
SDK's protoc-generated ones. They live in a private descriptor pool so that nothing else
registering a `hanami` package can clash with them.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

PACKAGE = "hanami"


def _file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(
        name="hanami_messages.proto", package=PACKAGE, syntax="proto3"
    )
    enum = fd.enum_type.add(name="ClusterProcessType")
    enum.value.add(name="REQUEST_TYPE", number=0)
    enum.value.add(name="TRAIN_TYPE", number=1)

    io = fd.message_type.add(name="ClusterIO_Message")
    io.field.add(name="brickName", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    io.field.add(name="isLast", number=2, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
    io.field.add(
        name="processType",
        number=3,
        type=_F.TYPE_ENUM,
        type_name=f".{PACKAGE}.ClusterProcessType",
        label=_F.LABEL_OPTIONAL,
    )
    io.field.add(name="numberOfValues", number=4, type=_F.TYPE_UINT64, label=_F.LABEL_OPTIONAL)
    values = io.field.add(name="values", number=5, type=_F.TYPE_FLOAT, label=_F.LABEL_REPEATED)
    values.options.packed = True

    upload = fd.message_type.add(name="FileUpload_Message")
    upload.field.add(name="position", number=1, type=_F.TYPE_UINT64, label=_F.LABEL_OPTIONAL)
    upload.field.add(name="data", number=2, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)

    response = fd.message_type.add(name="FileUploadResponse_Message")
    response.field.add(name="success", number=1, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
    response.field.add(name="errorMessage", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    return fd


_pool = descriptor_pool.DescriptorPool()
_file_descriptor = _pool.Add(_file())


def _message(name: str):
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))


ClusterIO_Message = _message("ClusterIO_Message")
FileUpload_Message = _message("FileUpload_Message")
FileUploadResponse_Message = _message("FileUploadResponse_Message")

_process_type = _pool.FindEnumTypeByName(f"{PACKAGE}.ClusterProcessType")
REQUEST_TYPE = _process_type.values_by_name["REQUEST_TYPE"].number
TRAIN_TYPE = _process_type.values_by_name["TRAIN_TYPE"].number

__all__ = [
    "REQUEST_TYPE",
    "TRAIN_TYPE",
    "ClusterIO_Message",
    "FileUploadResponse_Message",
    "FileUpload_Message",
]
