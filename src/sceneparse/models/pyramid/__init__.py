"""Specialize and Fuse: the pyramidal output. :mod:`.targets`: the pyramidal ground truth, relabelling,
the Eq. 1 loss and the Eq. 2 fusion (Sec. 3); :mod:`.model`: the fusion decoder, unity and semantic heads and
``PyramidOutputModel`` (the ``pyramid_output`` architecture)."""
