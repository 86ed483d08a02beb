"""Generated gRPC/protobuf code for the sglc runtime service (built from sglc.proto by ``python -m proto.build``)."""
