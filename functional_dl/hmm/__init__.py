"""Hidden Markov models as pure JAX functions.

``HMM(initial_probs, transition_matrix, emissions)`` with ``Categorical``, ``Gaussian`` or
``DiagonalGaussian`` emissions; sequential inference with ``lax.scan`` (``forward``,
``log_likelihood``, ``posteriors``, ``viterbi``, and the low-level ``forward_filter``,
``backward_filter``, ``smoother``, ``most_likely_states`` on a ``(T, K)`` log-likelihood
matrix); parallel-in-time inference in ``functional_dl.hmm.parallel``; ``sample``;
Baum–Welch (``baum_welch``) as one jitted ``lax.while_loop``; ``check`` for eager validation.

What is checked, and when.  The model-level entry points (``forward``, ``log_likelihood``,
``posteriors``, ``viterbi``, their ``parallel`` versions, ``sample``, ``baum_welch``) call
``check`` first.  Shape checks (K, V, D agreement, one sequence vs a batch, lengths' shape,
integer symbols) are static and raise ``ValueError``/``TypeError`` inside ``jit`` and ``vmap``
too.  Value checks (negative or non-normalised probabilities, symbols outside ``[0, V)``,
non-positive-definite covariances, non-finite data, lengths outside ``[1, T]``) need
concrete numbers: they run on eager calls and are skipped for traced arguments, so inside
a user's ``jit``/``vmap``/``grad`` bad values are not detected (run ``check`` once, eagerly,
on the data).  The low-level functions on ``(T, K)`` matrices check shapes only.

Speed (``benchmarks/hmm.py`` compares with dynamax and hmmlearn).  Each function compiles once
per shapes and dtypes; batches come from ``vmap`` of the single-sequence functions (the loops
then work on ``(B, K)`` at every step) and EM runs as one compiled ``while_loop``.  Inside the
loops only what the recursion needs is computed (``_scans``); a careful pass reruns a sequence
only when the fast one underflows.  On CPU, XLA compiles a loop as a single kernel (several
times faster per step) only when one step touches less than 1 KiB, which a single sequence
with K ≤ 6 in float64 (K ≤ 10 in float32) does; users with long single sequences and larger K
can raise that limit before importing JAX, e.g.
``XLA_FLAGS=--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=100000``
(it measured about 2× faster for one sequence of T = 1000, K = 8, and slower for batches).
"""
from functional_dl.hmm import parallel
from functional_dl.hmm.emissions import Categorical, DiagonalGaussian, Gaussian
from functional_dl.hmm.inference import (Posteriors, backward_filter, forward, forward_filter,
                                         log_likelihood, posteriors, smoother)
from functional_dl.hmm.learning import (BaumWelchResult, SufficientStats, baum_welch,
                                        baum_welch_fit, e_step, m_step)
from functional_dl.hmm.model import HMM, check
from functional_dl.hmm.sampling import sample
from functional_dl.hmm.decoding import most_likely_states, viterbi

__all__ = [
    "HMM", "Categorical", "Gaussian", "DiagonalGaussian", "check",
    "forward", "log_likelihood", "posteriors", "viterbi", "sample", "baum_welch",
    "baum_welch_fit", "BaumWelchResult", "e_step", "m_step", "SufficientStats",
    "forward_filter", "backward_filter", "smoother", "most_likely_states", "Posteriors",
    "parallel",
]
