"""Trace a module to ONNX with a named input/output and a dynamic batch axis, then run onnx.checker.

Traces at batch 2 (a batch of 1 lets the tracer specialise the batch axis away) with the torch.export-based
exporter, the default since PyTorch 2.9.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import onnx
import torch
from torch import nn

from export.errors import ExportError

log = logging.getLogger(__name__)

#: The opset the exporter writes natively; onnxruntime 1.31 implements it fully.
OPSET = 18
TRACE_BATCH = 2


def export_onnx(
    model: nn.Module,
    input_size: tuple[int, ...],
    path: Path,
    *,
    input_name: str = "input",
    output_name: str = "logits",
    max_batch_size: int = 1024,
    input_dtype: torch.dtype = torch.float32,
) -> onnx.ModelProto:
    """Export ``model`` to ``path`` and return the checked graph; ``input_dtype`` is the graph input's type.

    Raises:
        ExportError: if tracing fails or onnx.checker rejects the graph.
    """
    model.eval()
    generator, shape = torch.Generator().manual_seed(0), (TRACE_BATCH, *input_size)
    if input_dtype.is_floating_point:
        sample = torch.randn(shape, generator=generator, dtype=input_dtype)
    else:  # uint8 pixels (export.uint8_input)
        sample = torch.randint(0, 256, shape, generator=generator, dtype=input_dtype)
    batch = torch.export.Dim("batch", min=1, max=max(max_batch_size, TRACE_BATCH))
    # The exporter prints its progress with print(); keep our own output readable and log it instead.
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), torch.no_grad():
            torch.onnx.export(
                model,
                (sample,),
                str(path),
                input_names=[input_name],
                output_names=[output_name],
                dynamic_shapes=({0: batch},),
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
            )
    except Exception as err:  # the exporter raises many types; all mean "cannot export this module"
        raise ExportError("onnx-export", f"torch.onnx.export failed: {type(err).__name__}: {err}") from err
    finally:
        log.debug("exporter output:\n%s", chatter.getvalue())
    graph = onnx.load(str(path))
    try:
        onnx.checker.check_model(graph, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError("onnx-checker", f"onnx.checker rejected the graph: {err}") from err
    return graph
