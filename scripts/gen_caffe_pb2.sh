#!/usr/bin/env bash
# Regenerate src/gristmill/caffe/caffe_pb2.py from caffe.proto with grpcio-tools' bundled protoc.
# The generated file checks that the protobuf runtime is at least the protoc version; we drop that
# check so the module also loads on the older runtimes the package allows (protobuf>=5.29): the
# builder API it uses exists there (tests/caffe/test_proto.py imports it on the installed runtime).
set -euo pipefail
cd "$(dirname "$0")/../src/gristmill/caffe"
PY=${PYTHON:-python}
"$PY" -m grpc_tools.protoc -I. --python_out=. caffe.proto
"$PY" - <<'PYEOF'
import re
path = "caffe_pb2.py"
text = open(path).read()
text = re.sub(r"from google\.protobuf import runtime_version as _runtime_version\n", "", text)
text = re.sub(r"_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)\n", "", text, flags=re.S)
open(path, "w").write(text)
PYEOF
echo "wrote src/gristmill/caffe/caffe_pb2.py"
