"""Fully connected CRF post-processing (Krähenbühl & Koltun, NIPS 2011): the "+dense CRF" baseline
of the GRN/LRN paper's Table 2 and DeepLab's post-processing.

Uses the maintained ``pydensecrf2`` package (PyPI, built from source; install with
``pip install "sceneparse[crf]"``). Mean-field inference with a Gaussian (smoothness) kernel and
a bilateral (appearance) kernel on the RGB image; unaries are ``-log p`` of the model's probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DenseCRF:
    """Dense CRF parameters (the pydensecrf defaults, which follow the original paper's code).

    Attributes:
        iterations: mean-field steps.
        gaussian_sxy, gaussian_compat: smoothness kernel: spatial std (pixels) and Potts weight.
        bilateral_sxy, bilateral_srgb, bilateral_compat: appearance kernel: spatial std (pixels),
            colour std (0-255 intensity units) and Potts weight.
    """

    iterations: int = 5
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0

    def __call__(self, probs: torch.Tensor, image_rgb: np.ndarray) -> torch.Tensor:
        """Refine one image's probabilities.

        Args:
            probs: ``(K, H, W)`` float probabilities (summing to 1 over K).
            image_rgb: ``(H, W, 3)`` uint8 RGB image of the same size.

        Returns:
            ``(K, H, W)`` float32 CRF marginals, on ``probs``' device.

        Raises:
            ImportError: ``pydensecrf2`` is not installed.
            ValueError: sizes or dtypes do not match.
        """
        try:
            import pydensecrf.densecrf as dcrf
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("dense CRF needs pydensecrf2: pip install 'sceneparse[crf]' "
                              "(builds from source, needs a C++ compiler)") from e
        k, h, w = probs.shape
        if image_rgb.shape != (h, w, 3) or image_rgb.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 matching probs {tuple(probs.shape)}, "
                             f"got {image_rgb.shape} {image_rgb.dtype}")
        p = probs.detach().float().cpu().numpy().reshape(k, -1)
        unary = np.ascontiguousarray(-np.log(np.clip(p, 1e-8, 1.0)), dtype=np.float32)
        crf = dcrf.DenseCRF2D(w, h, k)
        crf.setUnaryEnergy(unary)
        crf.addPairwiseGaussian(sxy=self.gaussian_sxy, compat=self.gaussian_compat)
        crf.addPairwiseBilateral(sxy=self.bilateral_sxy, srgb=self.bilateral_srgb,
                                 rgbim=np.ascontiguousarray(image_rgb), compat=self.bilateral_compat)
        q = np.asarray(crf.inference(self.iterations), dtype=np.float32).reshape(k, h, w)
        return torch.from_numpy(q).to(probs.device)
