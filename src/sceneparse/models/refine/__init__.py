"""The GRN / LRN refinement networks (Global and Local Refinement Networks paper, Sec. 3): the networks
(:mod:`.networks`: GRN, LRN, the context-module baseline) and the cascade that runs them after a trained
front model (:mod:`.cascade`: ``RefinementCascade``, the ``refine`` architecture)."""
