"""The model signature the KServe v2 codec tests share, HTTP's and gRPC's: one input, two outputs, three labels."""

from __future__ import annotations

from service.repository import ModelConfig, TensorSpec
from service.signature import Signature

CONFIG = ModelConfig(
    name="m",
    max_batch_size=8,
    input=(TensorSpec("input", "TYPE_FP32", (1, 4, 4)),),
    output=(TensorSpec("logits", "TYPE_FP32", (3,)), TensorSpec("extra", "TYPE_INT64", (2,))),
    preprocessing=None,
    labels=("cat", "dog", "eel"),
    versions={},
)
SIG = Signature.from_config(CONFIG)
