"""One session's IOBinding: fixed buffers bound once per batch bucket, so a GPU batch allocates nothing.

Each input and output gets one buffer sized for the largest bucket, on the session's device, and one staging buffer
in page-locked host memory (``service/cuda_memory.py``). Every bucket's binding views the first ``bucket`` rows of
the same buffers, so memory is one max-size set, not one set per batch size. A batch of ``rows`` is written into the
input staging buffer (the batcher merges requests straight into it, see ``staging``), its ``rows`` are copied to the
device, the bucket holding it runs (rows past ``rows`` are stale padding whose outputs nobody reads), and the
``rows`` outputs are copied back and handed out as a fresh array: callers may hold their answers after the next
batch has overwritten the buffers.

Because the addresses never change, the same bindings serve CUDA graphs: with ``optimization.cuda.graphs`` each
bucket captures its own graph (ORT's ``gpu_graph_id``) on its first runs and replays it afterwards.

On the CPU (tests) the staging buffers are the bound buffers and nothing is copied.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service import cuda_memory
from service.buckets import batch_buckets, bucket_for
from service.datatypes import V2_TO_NUMPY
from service.repository import ModelConfig

logger = logging.getLogger(__name__)

Arrays = dict[str, npt.NDArray[Any]]


class BoundSession:
    """Runs batches of any size up to ``max_batch_size`` on one session through per-bucket bindings.

    Args:
        session: The session; ``device`` is where it runs (``cuda`` or ``cpu``).
        config: The model's tensors and ``max_batch_size``; ``optimization.cuda.graphs`` for graph ids.
        device: ``cuda`` keeps bound buffers on GPU ``device_id`` and stages through pinned host memory.
    """

    def __init__(self, session: ort.InferenceSession, config: ModelConfig, device: str, device_id: int) -> None:
        self.session = session
        self.device = device
        self.device_id = device_id
        self.buckets = batch_buckets(config.max_batch_size)
        largest = self.buckets[-1]
        self._in_specs = [(t.name, (largest, *t.dims), V2_TO_NUMPY[t.datatype]) for t in config.input]
        self._out_specs = [(t.name, (largest, *t.dims), V2_TO_NUMPY[t.datatype]) for t in config.output]
        self._staged_in = {name: self._host(shape, dtype) for name, shape, dtype in self._in_specs}
        self._staged_out = {name: self._host(shape, dtype) for name, shape, dtype in self._out_specs}
        self._device_values: list[ort.OrtValue] = []  # keeps the device buffers alive as long as the bindings
        self._bound_in = {
            name: self._bound_address(name, shape, dtype, self._staged_in) for name, shape, dtype in self._in_specs
        }
        self._bound_out = {
            name: self._bound_address(name, shape, dtype, self._staged_out) for name, shape, dtype in self._out_specs
        }
        self._bindings = {bucket: self._bind(bucket) for bucket in self.buckets}
        graphs = config.optimization.cuda.graphs and device == "cuda"
        self._run_options = {bucket: self._options(i, graphs) for i, bucket in enumerate(self.buckets)}

    def _host(self, shape: tuple[int, ...], dtype: Any) -> npt.NDArray[Any]:
        """A staging buffer: pinned when the session runs on a GPU and the CUDA runtime allows it."""
        if self.device == "cuda":
            pinned = cuda_memory.pinned_empty(shape, dtype)
            if pinned is not None:
                pinned.fill(0)
                return pinned
            logger.warning("pinned host memory unavailable: staging %s through pageable memory (slower copies)", shape)
        return np.zeros(shape, dtype)

    def _bound_address(
        self, name: str, shape: tuple[int, ...], dtype: Any, staging: dict[str, npt.NDArray[Any]]
    ) -> int:
        """The address bound for ``name``: a device buffer on a GPU, the staging buffer itself on the CPU."""
        if self.device == "cpu":
            return int(staging[name].ctypes.data)
        value = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", self.device_id)
        self._device_values.append(value)
        return int(value.data_ptr())

    def _bind(self, bucket: int) -> ort.IOBinding:
        binding = self.session.io_binding()
        gpu = self.device_id if self.device == "cuda" else 0
        for name, shape, dtype in self._in_specs:
            binding.bind_input(name, self.device, gpu, dtype, [bucket, *shape[1:]], self._bound_in[name])
        for name, shape, dtype in self._out_specs:
            binding.bind_output(name, self.device, gpu, dtype, [bucket, *shape[1:]], self._bound_out[name])
        return binding

    @staticmethod
    def _options(graph_id: int, graphs: bool) -> ort.RunOptions | None:
        if not graphs:
            return None
        options = ort.RunOptions()
        options.add_run_config_entry("gpu_graph_id", str(graph_id + 1))  # ORT reserves -1 (no graph); 0 is valid
        return options

    def staging(self, rows: int) -> Arrays:
        """Views of the first ``rows`` rows of the input staging buffers, for the batcher to merge requests into."""
        return {name: array[:rows] for name, array in self._staged_in.items()}

    def run(self, inputs: Mapping[str, npt.NDArray[Any]]) -> Arrays:
        """Run one batch (its rows padded up to a bucket); returns its outputs, ``rows`` rows each, as new arrays."""
        rows = next(iter(inputs.values())).shape[0]
        bucket = bucket_for(rows, self.buckets)
        for name, array in inputs.items():
            staged = self._staged_in[name]
            if not np.may_share_memory(array, staged):  # merged elsewhere (a lone request): stage it now
                staged[:rows] = array
            if self.device == "cuda":
                nbytes = staged[:rows].nbytes
                cuda_memory.copy(self._bound_in[name], int(staged.ctypes.data), nbytes, cuda_memory.HOST_TO_DEVICE)
        self.session.run_with_iobinding(self._bindings[bucket], self._run_options[bucket])
        outputs = {}
        for name, staged in self._staged_out.items():
            if self.device == "cuda":
                nbytes = staged[:rows].nbytes
                cuda_memory.copy(int(staged.ctypes.data), self._bound_out[name], nbytes, cuda_memory.DEVICE_TO_HOST)
            outputs[name] = staged[:rows].copy()
        return outputs
