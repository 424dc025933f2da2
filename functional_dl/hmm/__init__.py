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
