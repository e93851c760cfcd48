"""Native CPU kernels of the inference engine (see :mod:`sceneparse.kernels.native`)."""
