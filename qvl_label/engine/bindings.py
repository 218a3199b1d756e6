"""llama.cpp around the model: its log, the compute devices ggml sees, and what the build can offload."""

from __future__ import annotations

import ctypes
import os
from collections import deque
from pathlib import Path
from typing import Any

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd

from .constraints import grammar_engine_description

_LOG_TAIL_LINES = 200


class _LogSink:
    """Collects llama.cpp's log lines so errors can quote them; echoes them when verbose."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.lines: deque[str] = deque(maxlen=_LOG_TAIL_LINES)
        self._partial = ""

        self.interrupted: BaseException | None = None

        @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator,misc]
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            # An exception cannot cross C: ctypes would print it with a traceback and drop it.
            # A Ctrl-C whose handler runs in here (the handler raises KeyboardInterrupt) is kept
            # and raised by the engine once the llama.cpp call returns (reraise_interrupt).
            try:
                piece = text.decode("utf-8", errors="replace")
                if self.verbose:
                    os.write(2, text)
                self._partial += piece
                while "\n" in self._partial:
                    line, self._partial = self._partial.split("\n", 1)
                    self.lines.append(line)
            except BaseException as exc:  # nothing may escape into C
                self.interrupted = exc

        self.callback = callback  # keep a reference: ctypes callbacks die with their object

    def reraise_interrupt(self) -> None:
        """Raise an exception (a second Ctrl-C) that arrived while llama.cpp was calling back."""
        if self.interrupted is not None:
            exc, self.interrupted = self.interrupted, None
            raise exc

    def install(self) -> None:
        llama_cpp.llama_log_set(self.callback, ctypes.c_void_p(0))
        mtmd.mtmd_log_set(self.callback, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(self.callback, ctypes.c_void_p(0))

    def last_error(self) -> str:
        for line in reversed(self.lines):
            if "error" in line.lower() or "failed" in line.lower():
                return line.strip()
        return self.lines[-1].strip() if self.lines else ""


_LOG_SINK: _LogSink | None = None


def log_sink(verbose: bool) -> _LogSink:
    global _LOG_SINK
    if _LOG_SINK is None:
        _LOG_SINK = _LogSink(verbose)
        _LOG_SINK.install()
    _LOG_SINK.verbose = verbose
    return _LOG_SINK


def load_backend() -> None:
    """Initialise llama.cpp's backends once, with its log going to the sink (idempotent)."""
    log_sink(False)
    llama_cpp.llama_backend_init()


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


def backend_description() -> dict[str, Any]:
    """What this llama-cpp-python build can do, for `doctor`."""
    load_backend()
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "gpu_offload": gpu_offload_supported(),
        "devices": _backend_devices(),
        "grammar": grammar_engine_description(),
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip(),
    }


def _ggml_library() -> Any:
    """ggml's device API; llama-cpp-python binds none of it, so it is bound here."""
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    for candidate in (p for p in lib_dir.glob("*ggml*") if p.name.split(".")[0] in ("libggml", "ggml")):
        try:
            ggml = ctypes.CDLL(str(candidate))
            ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
            ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
            ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
            for fn in (ggml.ggml_backend_dev_name, ggml.ggml_backend_dev_description):
                fn.restype = ctypes.c_char_p
                fn.argtypes = [ctypes.c_void_p]
            ggml.ggml_backend_dev_memory.restype = None
            ggml.ggml_backend_dev_memory.argtypes = [
                ctypes.c_void_p,
                ctypes.POINTER(ctypes.c_size_t),
                ctypes.POINTER(ctypes.c_size_t),
            ]
        except (OSError, AttributeError):
            continue
        return ggml
    return None


def _backend_devices() -> list[str]:
    """Devices ggml sees (CPU, CUDA0, Metal ...)."""
    ggml = _ggml_library()
    if ggml is not None:
        devices = []
        for i in range(ggml.ggml_backend_dev_count()):
            dev = ggml.ggml_backend_dev_get(i)
            name = ggml.ggml_backend_dev_name(dev).decode()
            desc = (ggml.ggml_backend_dev_description(dev) or b"").decode()
            devices.append(f"{name} ({desc})" if desc else name)
        return devices
    return []


def free_device_memory(gpu: bool) -> int | None:
    """Free bytes on the first GPU (or of system RAM for CPU builds); None when unknown."""
    if not gpu:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    ggml = _ggml_library()
    if ggml is None:
        return None
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        name = ggml.ggml_backend_dev_name(dev).decode()
        if name.upper().startswith("CPU"):
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        ggml.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        return int(free.value)
    return None
