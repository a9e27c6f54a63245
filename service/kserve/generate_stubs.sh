#!/usr/bin/env bash
# Regenerate the KServe v2 gRPC stubs in service/kserve/generated/ from
# service/kserve/protos/grpc_predict_v2.proto (needs grpcio-tools, a dev dependency).
#
# The proto is compiled under the import path service/kserve/generated/, so the generated
# *_pb2_grpc.py imports its messages as `service.kserve.generated.grpc_predict_v2_pb2`.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
cd "$root"
"$python" -m grpc_tools.protoc \
  -I "service/kserve/generated=service/kserve/protos" \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  service/kserve/generated/grpc_predict_v2.proto
echo "generated: $(ls service/kserve/generated/grpc_predict_v2_pb2*.py* | tr '\n' ' ')"
