"""Hidden Markov models as pure JAX functions.

``HMM(initial_probs, transition_matrix, emissions)`` with ``Categorical``, ``Gaussian`` or
``DiagonalGaussian`` emissions; sequential inference with ``lax.scan`` (``forward``,
``log_likelihood``, ``posteriors``, ``viterbi``, and the low-level ``forward_filter``,
``backward_filter``, ``smoother``, ``most_likely_states`` on a ``(T, K)`` log-likelihood
matrix); parallel-in-time inference in ``functional_dl.hmm.parallel``; ``sample``;
Baum–Welch (``baum_welch``) as one jitted ``lax.while_loop``; ``check`` for eager validation.
"""
from functional_dl.hmm import parallel
from functional_dl.hmm.emissions import Categorical, DiagonalGaussian, Gaussian
from functional_dl.hmm.inference import (Posteriors, backward_filter, forward, forward_filter,
                                         log_likelihood, most_likely_states, posteriors, smoother,
                                         viterbi)
from functional_dl.hmm.learning import (BaumWelchResult, SufficientStats, baum_welch,
                                        baum_welch_fit, e_step, m_step)
from functional_dl.hmm.model import HMM, check
from functional_dl.hmm.sampling import sample

__all__ = [
    "HMM", "Categorical", "Gaussian", "DiagonalGaussian", "check",
    "forward", "log_likelihood", "posteriors", "viterbi", "sample", "baum_welch",
    "baum_welch_fit", "BaumWelchResult", "e_step", "m_step", "SufficientStats",
    "forward_filter", "backward_filter", "smoother", "most_likely_states", "Posteriors",
    "parallel",
]
