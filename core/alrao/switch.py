r"""Switch model averaging (van Erven, Grünwald, de Rooij 2007) over Alrao's output copies."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["Switch"]

_NEG_INF = -math.inf
_LOG_2 = math.log(2.0)


def _logsumexp(xs: list[float]) -> float:
    """``log(sum(exp(xs)))`` of Python floats, with numpy's and torch's inf/NaN results."""
    m = max(xs)
    if math.isinf(m):  # all -inf, or a +inf: the shift below would make NaN
        return math.nan if any(v != v for v in xs) else m
    return m + math.log(sum([math.exp(v - m) for v in xs]))


def _logaddexp(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` of two Python floats, as ``numpy.logaddexp`` (NaN propagates)."""
    if a < b:
        a, b = b, a
    if b == _NEG_INF:
        return a
    if a == b:  # also inf + inf
        return a + _LOG_2
    return a + math.log1p(math.exp(b - a))


class Switch(nn.Module):
    r"""Switch posterior over ``num_copies`` predictors, kept in log space, float64, on device.

    Hidden state: a copy index and a flag "may still switch" (row ``a``) / "will not switch any
    more" (row ``b``). With prior :math:`\theta` on row ``a`` and switch probability
    :math:`\pi_t = 1/(t+1)` after observation ``t``:

    .. math::
        \begin{aligned}
            &w_a \leftarrow \log\theta - \log N, \quad w_b \leftarrow \log(1-\theta) - \log N,
                \quad t \leftarrow 0 \\
            &\textbf{update}(\ell): \quad t \leftarrow t + 1; \quad
                w_a \leftarrow w_a + \ell, \quad w_b \leftarrow w_b + \ell \\
            &\quad \text{pool} \leftarrow \operatorname{logsumexp}(w_a) + \log\pi_t, \quad
                   w_a \leftarrow w_a + \log(1 - \pi_t) \\
            &\quad w_a \leftarrow \operatorname{logaddexp}(w_a, \text{pool} + \log\theta - \log N),
                \quad w_b \leftarrow \operatorname{logaddexp}(w_b, \text{pool} + \log(1-\theta) - \log N) \\
            &\quad (w_a, w_b) \leftarrow (w_a, w_b) - \operatorname{logsumexp}(w_a, w_b) \\
            &\log a_j = \operatorname{logaddexp}(w_{a,j}, w_{b,j})
        \end{aligned}

    where :math:`\ell_j` is copy ``j``'s mean log-likelihood on the minibatch (``-`` its mean
    NLL). :meth:`log_posterior` is the predictive weight of each copy for the *next* minibatch.

    Args:
        num_copies: number of averaged predictors :math:`N` (>= 1).
        theta: prior probability of the "may still switch" row, in (0, 1). The paper uses 0.999;
            the authors' public code uses 0.9999.
        sanitize: map NaN log-likelihoods (a diverged copy) to :math:`-\infty` and skip an update
            in which every copy has zero likelihood, so one diverged copy cannot poison the
            posterior (default True).

    All state is in buffers (``log_w``: (2, N), ``t``: scalar), float64, so it is saved in
    ``state_dict`` and :meth:`update` never synchronises with the host. ``module.to(dtype)``
    moves the buffers but keeps them float64.

    .. note::
        ``sanitize=True`` departs from the paper, whose arithmetic would turn the whole posterior
        into NaN after a single NaN loss. On finite inputs both settings are identical.

    .. note::
        The Switch is defined per observation; as in the authors' code, each *minibatch* is one
        observation whose log-likelihood is the batch *mean* (not the sum), which tempers the
        evidence by the batch size. The authors' code raises on a NaN loss instead of sanitizing.

    References:
        T. van Erven, P. Grünwald, S. de Rooij. Catching up faster in Bayesian model selection
        and model averaging. NeurIPS 2007.
        L. Blier, P. Wolinski, Y. Ollivier. Learning with Random Learning Rates. ECML-PKDD 2019,
        Appendix (Switch).
    """

    log_w: Tensor
    t: Tensor

    def __init__(self, num_copies: int, theta: float = 0.999, *, sanitize: bool = True) -> None:
        super().__init__()
        if not isinstance(num_copies, int) or num_copies < 1:
            raise ValueError(f"Invalid num_copies: {num_copies!r} (must be an int >= 1)")
        if not 0.0 < theta < 1.0:
            raise ValueError(f"Invalid theta: {theta} (must be in (0, 1))")
        self.num_copies = num_copies
        self.theta = float(theta)
        self.sanitize = sanitize
        log_n = math.log(num_copies)
        self._log_prior_a = math.log(theta) - log_n
        self._log_prior_b = math.log1p(-theta) - log_n
        init = torch.empty(2, num_copies, dtype=torch.float64)
        init[0].fill_(self._log_prior_a)
        init[1].fill_(self._log_prior_b)
        self.register_buffer("log_w", init)
        self.register_buffer("t", torch.zeros((), dtype=torch.float64))
        # (log_w, its version, log-posterior as floats or None, tensors by dtype): see log_posterior
        self._log_post: tuple[Tensor, int, list[float] | None, dict[torch.dtype | None, Tensor]] | None
        self._log_post = None
        # (log_w, its version, t, its version, row a, row b, t as a float) as the last CPU update
        # wrote them: the next update reads them instead of the buffers when nothing else wrote
        self._rows: tuple[Tensor, int, Tensor, int, list[float], list[float], float] | None = None

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Switch:
        # keep the buffers float64 under .half()/.float()/.to(dtype): device moves only
        before = dict(self._buffers)
        super()._apply(fn, recurse)
        for name, old in before.items():
            new = self._buffers[name]
            if old is not None and new is not None and new.dtype != old.dtype:
                self._buffers[name] = old.to(device=new.device)
        return self

    def update(self, loglik: Tensor) -> None:
        """Fold in one minibatch: ``loglik[j]`` = copy j's mean log-likelihood on it.

        On CPU the arithmetic runs on Python floats (float64, like the buffers), read from and
        written back to the buffers: for N ~ 10 numbers, a dozen tensor ops cost several times
        more in dispatch than the maths, and reading a CPU tensor is no device sync. Python
        floats also beat NumPy here: right after a training step NumPy's ufunc machinery is out
        of the CPU caches, and inside a training loop the NumPy update cost ~1.5x this one
        (figures in docs/benchmarks.md). The update reuses the floats it wrote last time unless
        the buffers' version counters show another write (reset, load_state_dict, any in-place
        change). On an accelerator it stays in tensor ops (no host sync). Both paths compute the
        same float64 recursion; tests check they agree.
        """
        if self.log_w.device.type == "cpu":
            self._update_python(loglik)
        else:
            self._update_tensor(loglik)

    def _update_python(self, loglik: Tensor) -> None:
        ll: list[float] = loglik.detach().reshape(self.num_copies).tolist()
        if self.sanitize:
            ll = [v if v == v else _NEG_INF for v in ll]  # NaN -> -inf
        log_w, t_buf = self.log_w, self.t
        rows = self._rows
        if (
            rows is not None
            and rows[0] is log_w
            and rows[1] == log_w._version
            and rows[2] is t_buf
            and rows[3] == t_buf._version
        ):
            w_a, w_b, t = rows[4], rows[5], rows[6] + 1.0  # what the previous update wrote
        else:
            w_a, w_b = log_w.tolist()
            t = float(t_buf) + 1.0
        log_pi = -math.log1p(t)
        log_1m_pi = math.log(t) + log_pi
        w_a = [w + v for w, v in zip(w_a, ll, strict=True)]
        w_b = [w + v for w, v in zip(w_b, ll, strict=True)]
        pool = _logsumexp(w_a) + log_pi
        prior_a = pool + self._log_prior_a
        prior_b = pool + self._log_prior_b
        w_a = [_logaddexp(w + log_1m_pi, prior_a) for w in w_a]
        w_b = [_logaddexp(w, prior_b) for w in w_b]
        norm = _logaddexp(_logsumexp(w_a), _logsumexp(w_b))
        t_buf.fill_(t)
        if self.sanitize and not math.isfinite(norm):
            # nobody explains this batch: keep the previous weights
            if rows is not None and rows[0] is log_w and rows[1] == log_w._version:
                self._rows = (log_w, log_w._version, t_buf, t_buf._version, rows[4], rows[5], t)
            return
        new_a = [w - norm for w in w_a]
        new_b = [w - norm for w in w_b]
        log_w.copy_(torch.tensor([new_a, new_b], dtype=torch.float64))
        self._rows = (log_w, log_w._version, t_buf, t_buf._version, new_a, new_b, t)
        log_a = [_logaddexp(a, b) for a, b in zip(new_a, new_b, strict=True)]
        self._log_post = (log_w, log_w._version, log_a, {})

    @torch.no_grad()
    def _update_tensor(self, loglik: Tensor) -> None:
        ll = loglik.detach().to(dtype=torch.float64, device=self.log_w.device).reshape(self.num_copies)
        if self.sanitize:
            # NaN -> -inf; not nan_to_num, which would also turn -inf into the lowest float
            ll = torch.where(ll == ll, ll, -math.inf)
        self.t.add_(1.0)
        log_pi = -torch.log1p(self.t)  # log 1/(t+1)
        log_1m_pi = torch.log(self.t) + log_pi  # log t/(t+1)
        w = self.log_w + ll  # (2, N)
        pool = torch.logsumexp(w[0], 0) + log_pi
        w_a = torch.logaddexp(w[0] + log_1m_pi, pool + self._log_prior_a)
        w_b = torch.logaddexp(w[1], pool + self._log_prior_b)
        new = torch.stack([w_a, w_b])
        norm = torch.logsumexp(new.reshape(-1), 0)
        new = new - norm
        if self.sanitize:
            new = torch.where(torch.isfinite(norm), new, self.log_w)
        self.log_w.copy_(new)

    def log_posterior(self, dtype: torch.dtype | None = None) -> Tensor:
        """Normalised log-weights :math:`\\log a_j`, shape (N,), float64 (or cast to ``dtype``).

        Computed once per state of the buffers (tracked by ``log_w``'s in-place version counter,
        which every update, reset and ``load_state_dict`` advances) and shared by later calls:
        do not modify the result in place. After a CPU :meth:`update` the values are already
        known as Python floats, so a training step's forward only builds a tensor from them.
        """
        w = self.log_w
        cached = self._log_post
        if cached is None or cached[0] is not w or cached[1] != w._version:
            cached = (w, w._version, None, {})
            self._log_post = cached
        out = cached[3].get(dtype)
        if out is None:
            if cached[2] is not None:
                out = torch.tensor(cached[2], dtype=dtype or torch.float64)
            else:
                out = torch.logaddexp(w[0], w[1])
                if dtype is not None:
                    out = out.to(dtype=dtype)
            cached[3][dtype] = out
        return out

    def posterior(self) -> Tensor:
        """Weights :math:`a_j`, shape (N,), float64, summing to 1."""
        return self.log_posterior().exp()

    def reset(self) -> None:
        """Back to the prior."""
        with torch.no_grad():
            self.log_w[0].fill_(self._log_prior_a)
            self.log_w[1].fill_(self._log_prior_b)
            self.t.zero_()

    def extra_repr(self) -> str:
        return f"num_copies={self.num_copies}, theta={self.theta}, sanitize={self.sanitize}"
