"""config.pbtxt as `rtvol export` writes it, read by Triton's own ModelConfig schema (the
model_config.proto that tritonclient ships), strictly: an unknown or misspelt field, a wrong
data type or a malformed version policy fails here, not when a Triton server loads it.
Triton's rules for a batched model are checked on the parsed message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers.models import export_random

from rtvol.repository import CONFIG_FILE

# In a child process: tritonclient's protos and rtvol's copy share the package 'inference',
# and only one of them can be loaded in a pytest process.
PARSE = """
import sys
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc
config = text_format.Parse(open(sys.argv[1]).read(), mc.ModelConfig())  # no unknown fields
print(json_format.MessageToJson(config, preserving_proto_field_name=True))
"""


def test_exported_config_is_a_valid_triton_model_config(tmp_path: Path) -> None:
    export_random(tmp_path, seed=1)
    run = subprocess.run([sys.executable, "-c", PARSE, str(tmp_path / "rtvol_cnn" / CONFIG_FILE)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    config = json.loads(run.stdout)
    assert config["name"] == "rtvol_cnn" and config["platform"] == "onnxruntime_onnx"
    batch = config["max_batch_size"]
    assert batch > 0  # dims leave out the batch dimension, which Triton adds (the ONNX graph's is dynamic)
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("window", "TYPE_FP32", ["50", "12"])]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
        ("rv", "TYPE_FP32", ["1"]), ("direction", "TYPE_FP32", ["3"]), ("momentum", "TYPE_FP32", ["1"])]
    preferred = config["dynamic_batching"]["preferred_batch_size"]
    assert preferred and all(0 < b <= batch for b in preferred)  # Triton refuses a larger one
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
