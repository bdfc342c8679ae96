"""TensorRT engine cache: the folder key, the default base, and the options for writable and unwritable folders.

The GPU, ONNX Runtime and TensorRT probes are replaced by fixed values (no GPU or TensorRT is needed); NVML's
C calls are answered by a fake library that follows NVML's calling convention (status codes, out-parameters).
"""

from __future__ import annotations

import ctypes
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from service import trt_cache

ENABLED_KEYS = {"trt_engine_cache_enable", "trt_engine_cache_path", "trt_timing_cache_enable", "trt_timing_cache_path"}
DISABLED = {"trt_engine_cache_enable": "False", "trt_timing_cache_enable": "False"}


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fixed answers for the three probes; a test changes one entry to see the key change."""
    values = {"gpu": "NVIDIA H200-sm90", "ort": "1.31.1", "trt": "10.16.1.11"}
    monkeypatch.setattr(trt_cache, "_gpu_identity", lambda device_id: values["gpu"])
    monkeypatch.setattr(trt_cache, "_ort_version", lambda: values["ort"])
    monkeypatch.setattr(trt_cache, "_tensorrt_version", lambda: values["trt"])
    return values


def test_key_names_gpu_ort_and_tensorrt(probes: dict[str, str]) -> None:
    assert trt_cache.cache_key(0) == "nvidia-h200-sm90-ort-1.31.1-trt-10.16.1.11"


@pytest.mark.parametrize(
    ("probe", "other"),
    [("gpu", "NVIDIA H100 80GB HBM3-sm90"), ("gpu", "NVIDIA H200-sm100"), ("ort", "1.32.0"), ("trt", "10.16.0.72")],
)
def test_any_change_that_invalidates_an_engine_changes_the_key(probes: dict[str, str], probe: str, other: str) -> None:
    before = trt_cache.cache_key(0)
    probes[probe] = other
    assert trt_cache.cache_key(0) != before


def test_key_is_one_safe_folder_name(probes: dict[str, str]) -> None:
    probes["gpu"] = "NVIDIA A100-SXM4-80GB / MIG 1g.10gb \\ ..-sm80"
    probes["ort"] = "1.31.1+cu130"
    probes["trt"] = trt_cache.UNKNOWN_TENSORRT
    key = trt_cache.cache_key(0)
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", key), key
    assert key.endswith("-trt-unknown"), key
    assert Path(key).name == key
    assert ".." not in Path(key).parts


def test_default_base_follows_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert trt_cache.default_cache_base() == tmp_path / "xdg" / "cnnserve" / "tensorrt"


@pytest.mark.parametrize("xdg", [None, "", "relative/cache"], ids=["unset", "empty", "relative"])
def test_default_base_falls_back_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xdg: str | None) -> None:
    """XDG's rules: an unset, empty or relative XDG_CACHE_HOME means ~/.cache."""
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert trt_cache.default_cache_base() == tmp_path / "home" / ".cache" / "cnnserve" / "tensorrt"


def test_writable_base_enables_both_caches_in_the_keyed_folder(
    probes: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = tmp_path / "not" / "yet" / "there"
    with caplog.at_level(logging.INFO, logger=trt_cache.__name__):
        options = trt_cache.tensorrt_cache_options(base, 0, "resnet18")
    folder = base / trt_cache.cache_key(0)
    assert options == {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(folder),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(folder),
    }
    assert folder.is_dir()
    assert list(folder.iterdir()) == [], "the write probe must not be left behind"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_existing_cache_folder_is_reused(probes: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / trt_cache.cache_key(0)
    folder.mkdir()
    (folder / "engine.bin").write_bytes(b"plan")
    assert set(trt_cache.tensorrt_cache_options(tmp_path, 0, "m")) == ENABLED_KEYS
    assert (folder / "engine.bin").read_bytes() == b"plan"


def test_unwritable_base_disables_the_caches_with_one_warning(
    probes: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder under a regular file cannot be created by anyone, root included (chmod would not stop root)."""
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    base = tmp_path / "file" / "cache"
    with caplog.at_level(logging.DEBUG, logger=trt_cache.__name__):
        options = trt_cache.tensorrt_cache_options(base, 0, "resnet18")
    assert options == DISABLED
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    for expected in ("resnet18", str(base / trt_cache.cache_key(0)), "Not a directory", "CNNSERVE_TENSORRT_CACHE_PATH"):
        assert expected in message, f"{expected!r} missing from: {message}"
    assert "rebuilt at every start" in message, message


def test_a_folder_that_refuses_the_write_probe_disables_the_caches(
    probes: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The folder exists (a read-only mount, say) but writing in it fails: same answer, same single warning."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(trt_cache.tempfile, "NamedTemporaryFile", refuse)
    with caplog.at_level(logging.INFO, logger=trt_cache.__name__):
        options = trt_cache.tensorrt_cache_options(tmp_path, 0, "m")
    assert options == DISABLED
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "Permission denied" in warnings[0].getMessage()


def test_a_path_no_filesystem_accepts_never_raises(probes: dict[str, str]) -> None:
    assert trt_cache.tensorrt_cache_options(Path("/tmp/bad\0name"), 0, "m") == DISABLED


def test_the_real_probes_never_raise_without_gpu_or_tensorrt(tmp_path: Path) -> None:
    """On any machine, with or without NVML or TensorRT: a well-formed key and options, no exception."""
    key = trt_cache.cache_key(0)
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", key), key
    assert "-ort-" in key
    assert "-trt-" in key
    assert set(trt_cache.tensorrt_cache_options(tmp_path, 0, "m")) == ENABLED_KEYS


class FakeNvml:
    """NVML's C entry points as ctypes calls them: a status code back, answers through the out-parameters."""

    def __init__(self, name: bytes = b"NVIDIA H200", capability: tuple[int, int] = (9, 0), fail: str = "") -> None:
        self.name, self.capability, self.fail = name, capability, fail
        self.indices: list[int] = []
        self.shut_down = False

    def _status(self, call: str) -> int:
        return 999 if call == self.fail else 0

    def nvmlInit_v2(self) -> int:
        return self._status("init")

    def nvmlDeviceGetHandleByIndex_v2(self, index: ctypes.c_uint, handle: Any) -> int:
        self.indices.append(index.value)
        handle._obj.value = 0x1234
        return self._status("handle")

    def nvmlDeviceGetName(self, handle: ctypes.c_void_p, buffer: Any, length: ctypes.c_uint) -> int:
        assert length.value >= len(self.name) + 1
        buffer.value = self.name
        return self._status("name")

    def nvmlDeviceGetCudaComputeCapability(self, handle: ctypes.c_void_p, major: Any, minor: Any) -> int:
        major._obj.value, minor._obj.value = self.capability
        return self._status("capability")

    def nvmlShutdown(self) -> int:
        self.shut_down = True
        return 0


def _load_fake(monkeypatch: pytest.MonkeyPatch, fake: FakeNvml) -> None:
    real = ctypes.CDLL

    def cdll(name: str, *args: Any, **kwargs: Any) -> Any:
        return fake if name == trt_cache.NVML_LIBRARY else real(name, *args, **kwargs)

    monkeypatch.setattr(trt_cache.ctypes, "CDLL", cdll)


def test_gpu_identity_reads_name_and_compute_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml()
    _load_fake(monkeypatch, fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert trt_cache._gpu_identity(1) == "NVIDIA H200-sm90"
    assert fake.indices == [1]
    assert fake.shut_down


def test_gpu_identity_follows_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA's device 0 is the host's GPU 3 when CUDA_VISIBLE_DEVICES=3,1; NVML must be asked about GPU 3."""
    fake = FakeNvml()
    _load_fake(monkeypatch, fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    trt_cache._gpu_identity(0)
    assert fake.indices == [3]


@pytest.mark.parametrize("fail", ["handle", "name", "capability"])
def test_gpu_identity_is_unknown_when_nvml_fails(monkeypatch: pytest.MonkeyPatch, fail: str) -> None:
    fake = FakeNvml(fail=fail)
    _load_fake(monkeypatch, fake)
    assert trt_cache._gpu_identity(0) == trt_cache.UNKNOWN_GPU
    assert fake.shut_down, "NVML must be shut down after a failed query"


def test_gpu_identity_is_unknown_when_init_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    _load_fake(monkeypatch, FakeNvml(fail="init"))
    assert trt_cache._gpu_identity(0) == trt_cache.UNKNOWN_GPU


def test_gpu_identity_is_unknown_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trt_cache, "NVML_LIBRARY", "libcnnserve-no-such-nvml.so.1")
    assert trt_cache._gpu_identity(0) == trt_cache.UNKNOWN_GPU


def test_tensorrt_version_prefers_the_libs_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    def version(name: str) -> str:
        if name == "tensorrt-cu13-libs":
            return "10.16.1.11"
        raise trt_cache.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(trt_cache.importlib.metadata, "version", version)
    assert trt_cache._tensorrt_version() == "10.16.1.11"


def test_tensorrt_version_is_unknown_without_wheel_or_library(monkeypatch: pytest.MonkeyPatch) -> None:
    def version(name: str) -> str:
        raise trt_cache.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(trt_cache.importlib.metadata, "version", version)
    monkeypatch.setattr(trt_cache, "TENSORRT_LIBRARY", "libcnnserve-no-such-nvinfer.so.10")
    assert trt_cache._tensorrt_version() == trt_cache.UNKNOWN_TENSORRT


def test_tensorrt_version_decodes_libnvinfer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a wheel, libnvinfer's getInferLibVersion (TensorRT 10: major*10000 + minor*100 + patch) is read."""

    class Library:
        def __init__(self) -> None:
            self.getInferLibVersion = lambda: 101601

    def version(name: str) -> str:
        raise trt_cache.importlib.metadata.PackageNotFoundError(name)

    real = ctypes.CDLL
    monkeypatch.setattr(trt_cache.importlib.metadata, "version", version)
    monkeypatch.setattr(
        trt_cache.ctypes,
        "CDLL",
        lambda name, *a, **k: Library() if name == trt_cache.TENSORRT_LIBRARY else real(name, *a, **k),
    )
    assert trt_cache._tensorrt_version() == "10.16.1"
