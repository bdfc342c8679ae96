"""gRPC request messages, serialised once before the run: ``ModelInferRequest``s of random tensors in
``raw_input_contents``, shaped by the model's ``ModelMetadata``, for ``loadtest.grpc_lanes`` to send as bytes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

from loadtest.grpc_target import GrpcTarget
from loadtest.payloads import Workload, input_tensors, variants


async def fetch_grpc_metadata(target: GrpcTarget, model: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The model's ``ModelMetadata`` over gRPC, in the layout of the v2 HTTP metadata (``inputs``/``outputs`` of
    name, datatype, shape), so both protocols' workloads are built alike.

    Raises:
        RuntimeError: the server does not know the model, or answered with another error.
        OSError: nothing listens at the address.
    """
    channel = await asyncio.wait_for(target.channel(), timeout_s)
    try:
        answer = await channel.unary_unary(
            "/inference.GRPCInferenceService/ModelMetadata",
            request_serializer=service_pb2.ModelMetadataRequest.SerializeToString,
            response_deserializer=service_pb2.ModelMetadataResponse.FromString,
        )(service_pb2.ModelMetadataRequest(name=model), metadata=target.metadata, timeout=timeout_s)
    except grpc.aio.AioRpcError as err:
        raise RuntimeError(
            f"ModelMetadata({model!r}) at {target.url} failed with {err.code().name}: {err.details()}"
        ) from err
    finally:
        await channel.close()

    def specs(tensors: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in tensors]

    return {"name": answer.name, "inputs": specs(answer.inputs), "outputs": specs(answer.outputs)}


def grpc_workload(model: str, metadata: dict[str, Any], *, batch: int = 1, seed: int = 0) -> Workload:
    """Serialised ``ModelInferRequest``s with random tensors of the model's input shapes, ``batch`` rows each."""
    if batch < 1:
        raise ValueError(f"batch is {batch}, expected >= 1 rows per request")
    rng = np.random.default_rng(seed)
    outputs = [service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=o["name"]) for o in metadata["outputs"]]

    def make() -> tuple[bytes, int]:
        tensors = input_tensors(metadata, batch, rng)
        request = service_pb2.ModelInferRequest(
            model_name=model,
            inputs=[
                service_pb2.ModelInferRequest.InferInputTensor(name=t.name, datatype=t.datatype, shape=t.shape)
                for t in tensors
            ],
            outputs=outputs,
            raw_input_contents=[t.array.tobytes() for t in tensors],
        ).SerializeToString()
        return request, len(request)

    requests, size = variants(make)
    return Workload(f"v2 gRPC raw tensors, {batch} row(s)/request", requests, batch, size)
