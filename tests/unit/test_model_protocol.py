"""Our Open Inference Protocol definition is wire-compatible with tritonclient's: every
message field that we define has the same number and type there. Each side is read in its
own process (both register `inference.*` in the default protobuf pool)."""

from __future__ import annotations

import json
import subprocess
import sys

DUMP = """
import json, sys
from google.protobuf import descriptor_pb2
mods = [__import__(m, fromlist=['x']) for m in sys.argv[1:]]
out = {}
def walk(d, prefix):
    for m in d.nested_types:
        walk(m, prefix + m.name + '.')
    out.update({prefix + f.name: [f.number, f.type, f.is_repeated] for f in d.fields})
for mod in mods:
    for name, d in mod.DESCRIPTOR.message_types_by_name.items():
        walk(d, name + '.')
    for s in mod.DESCRIPTOR.services_by_name.values():
        out.update({'rpc.' + m.name: [m.input_type.full_name, m.output_type.full_name,
                                      m.client_streaming, m.server_streaming] for m in s.methods})
print(json.dumps(out))
"""


def dump(*modules: str) -> dict[str, list[object]]:
    out = subprocess.run([sys.executable, "-c", DUMP, *modules], capture_output=True, text=True,
                         check=True, timeout=60)
    result: dict[str, list[object]] = json.loads(out.stdout)
    return result


def test_fields_and_rpcs_match_tritonclient() -> None:
    ours = dump("rtvol.proto.inference.grpc_service_pb2", "rtvol.proto.inference.model_config_pb2")
    theirs = dump("tritonclient.grpc.service_pb2", "tritonclient.grpc.model_config_pb2")
    rpcs = {k for k in ours if k.startswith("rpc.")}
    assert {"rpc.ModelInfer", "rpc.ModelStreamInfer", "rpc.ModelConfig", "rpc.ServerLive"} <= rpcs
    mismatched = {k: (v, theirs.get(k)) for k, v in ours.items() if theirs.get(k) != v}
    assert not mismatched
    assert len(ours) > 60  # the whole definition was compared, not an empty dump
