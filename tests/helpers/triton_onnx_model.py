"""A Triton Python-backend model (copied into a version folder as model.py) that runs that
version's model.onnx with ONNX Runtime on the CPU: the stand-in for Triton's onnxruntime
backend, which PyPI's tritonserver (nvidia-pytriton) does not bundle. It runs inside
Triton's Python stub, not in pytest: triton_python_backend_utils exists only there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        self.input = config["input"][0]["name"]
        self.outputs = [o["name"] for o in config["output"]]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        onnx = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        # what the dynamic batcher gathered: one ONNX Runtime run, split back per request.
        # Tensors cross through DLPack: this stub's as_numpy()/Tensor(name, array) predate
        # numpy 2's ABI, and with our numpy 2.x they returned outputs of 0 bytes.
        inputs = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input)) for r in requests]
        results = self.session.run(self.outputs, {self.input: np.concatenate(inputs)})
        ends = np.cumsum([len(x) for x in inputs])
        return [pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack(name, out[end - len(x):end])
                                            for name, out in zip(self.outputs, results, strict=True)])
                for x, end in zip(inputs, ends, strict=True)]
