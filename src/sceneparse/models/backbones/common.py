"""What every backbone shares: the output strides and the stride/dilation switch of a convolution."""
from __future__ import annotations

import torch.nn as nn

VALID_OUTPUT_STRIDES = (8, 16, 32)


def _check_output_stride(output_stride: int) -> None:
    if output_stride not in VALID_OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {VALID_OUTPUT_STRIDES}, got {output_stride!r}")


def _set_conv(conv: nn.Conv2d, stride: int, dilation: int) -> None:
    """Set stride and dilation of a conv in place, keeping 'same' padding."""
    conv.stride = (stride, stride)
    k = conv.kernel_size[0]
    conv.dilation = (dilation, dilation)
    conv.padding = ((k - 1) // 2 * dilation,) * 2
