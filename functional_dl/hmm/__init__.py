"""Hidden Markov models as pure JAX functions.

``HMM(initial_probs, transition_matrix, emissions)`` with ``Categorical``, ``Gaussian``,
``DiagonalGaussian``, ``SphericalGaussian``, ``TiedGaussian``, ``GaussianMixture``,
``DiagonalGaussianMixture``, ``Poisson``, ``Bernoulli``, ``Multinomial`` or ``Gamma``
emissions (or any ``EmissionModel``); sequential inference with
``lax.scan`` (``forward``, ``log_likelihood``, ``posteriors``, ``viterbi``, and the low-level
``forward_filter``, ``backward_filter``, ``smoother``, ``most_likely_states`` on a ``(T, K)``
log-likelihood matrix); the same functions parallel in time in ``functional_dl.hmm.parallel``;
``sample``; online filtering (``filter_init``, ``filter_step``), the predictive distribution
(``next_state_probs``, ``predictive_log_density``), ``stationary_distribution`` and
posterior path sampling (``sample_posterior``, FFBS); Baum–Welch (``baum_welch``, ``baum_welch_with_history``) as one jitted
``lax.while_loop``; ``check`` for eager validation.

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
only when the fast one underflows.

From raw data: ``fit(key, X, lengths, num_states=K, emissions=Gaussian)`` draws
``num_restarts`` hmmlearn-like starts (``random_starts``) and runs EM from all of them in one
compiled program; ``fit_from(model, ...)`` runs EM from one start and says why it stopped
(``EMStatus``); ``score``, ``num_parameters``, ``aic``, ``bic`` select the model;
``pad_sequences`` turns hmmlearn's concatenated ``(X, lengths)`` into a padded batch.

A new emission family is one module in ``functional_dl/hmm/emissions/`` implementing
``EmissionModel`` and one import here.
"""
from functional_dl.hmm import parallel, validation
from functional_dl.hmm.decoding import most_likely_states, viterbi
from functional_dl.hmm.emissions import EmissionModel
from functional_dl.hmm.emissions.bernoulli import Bernoulli
from functional_dl.hmm.emissions.categorical import Categorical
from functional_dl.hmm.emissions.diagonal_gaussian import DiagonalGaussian
from functional_dl.hmm.emissions.diagonal_gaussian_mixture import DiagonalGaussianMixture
from functional_dl.hmm.emissions.gamma import Gamma
from functional_dl.hmm.emissions.gaussian import Gaussian
from functional_dl.hmm.emissions.gaussian_mixture import GaussianMixture
from functional_dl.hmm.emissions.multinomial import Multinomial
from functional_dl.hmm.emissions.poisson import Poisson
from functional_dl.hmm.emissions.spherical_gaussian import SphericalGaussian
from functional_dl.hmm.emissions.tied_gaussian import TiedGaussian
from functional_dl.hmm.inference import (backward_filter, forward, forward_filter, log_likelihood,
                                         posteriors, smoother)
from functional_dl.hmm.learning import (BaumWelchResult, SufficientStats, baum_welch,
                                        baum_welch_with_history, e_step, m_step)
from functional_dl.hmm.model import HMM, SmootherResult, check
from functional_dl.hmm.online import (FilterState, filter_init, filter_step, filter_update,
                                      next_state_probs, predictive_log_density,
                                      stationary_distribution)
from functional_dl.hmm.posterior_sampling import sample_posterior, sample_posterior_states
from functional_dl.hmm.sampling import sample
from functional_dl.hmm import initialization
from functional_dl.hmm.fitting import (FitResult, aic, bic, fit, num_parameters, pad_sequences,
                                       random_starts, score)
from functional_dl.hmm.learning import EMResult, EMStatus, fit_from

__all__ = [
    "HMM", "EmissionModel", "Categorical", "Gaussian", "DiagonalGaussian", "check",
    "forward", "log_likelihood", "posteriors", "viterbi", "sample",
    "baum_welch", "baum_welch_with_history", "BaumWelchResult", "e_step", "m_step",
    "SufficientStats", "forward_filter", "backward_filter", "smoother", "most_likely_states",
    "SmootherResult", "parallel", "validation",
    "FilterState", "filter_init", "filter_step", "filter_update", "next_state_probs",
    "predictive_log_density", "stationary_distribution", "sample_posterior",
    "sample_posterior_states",
    "fit", "FitResult", "random_starts", "pad_sequences", "score", "num_parameters", "aic", "bic",
    "fit_from", "EMResult", "EMStatus", "initialization",
]
__all__ += ["Poisson", "Bernoulli", "SphericalGaussian", "TiedGaussian", "Multinomial",
            "GaussianMixture", "DiagonalGaussianMixture", "Gamma"]
from functional_dl.hmm.priors import log_prior  # noqa: E402  (MAP-EM's log p(θ))

__all__ += ["log_prior"]
