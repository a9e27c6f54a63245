"""KServe Open Inference Protocol (v2) adapters over the data plane: gRPC and REST.

`tensors` (wire encodings, one tensor table per task), `dataplane_v2` (the protocol's operations,
shared by both adapters), `grpc_server` (grpc.aio, health, reflection) and `rest_routes` (the
`/v2` FastAPI routes). The gRPC stubs in `generated/` come from `protos/grpc_predict_v2.proto`
(`service/kserve/generate_stubs.sh`).
"""
