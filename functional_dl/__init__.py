"""functional_dl: deep learning and hidden Markov models as pure JAX functions.

``import functional_dl as fdl`` gives every sub-package: ``fdl.optim``, ``fdl.losses``,
``fdl.regularizers``, ``fdl.nn``, ``fdl.perceptron``, ``fdl.hmm``, ``fdl.train``,
``fdl.datasets``, ``fdl.checkpoint`` and ``fdl.distributed``; ``fdl.checks`` is the
vocabulary of argument checks they all validate with.
"""
__version__ = "0.1.0"

from functional_dl import (checks, checkpoint, datasets, distributed, hmm, losses, nn, optim,
                           perceptron, regularizers, train)

__all__ = ["checks", "checkpoint", "datasets", "distributed", "hmm", "losses", "nn", "optim",
           "perceptron", "regularizers", "train"]
