"""Phase II losses on the frozen first layer (method.md section 5).

Both losses reduce to one shifted logistic regression on a design ``A`` (n, m):

    L(theta2) = (1/n) * sum_i softplus(c - beta * A_i . theta2) + (l2 / 2) * ||theta2||^2,

with ``c = gamma + margin``.

* **pairwise** (Bradley-Terry on prompt-matched pairs, the default): ``A_i = x~_w,i - x~_l,i``, so the loss is
  ``mean log(1 + exp(-(beta * theta2'(x~_w - x~_l) - gamma)))``.
* **pointwise** (the paper's Eq. 9): chosen rows labelled ``y = +1`` and rejected rows ``y = -1`` are stacked,
  ``A_i = y_i * x~_i``, so the loss is ``mean log(1 + exp(-beta * y * theta2' x~ + gamma))``.

The ``paper`` mode's extra margin (1.0 in the authors' code) is read here as a further shift of the logit,
``c = gamma + margin``: the pair must win by ``(gamma + margin) / beta`` before its loss falls below log 2.

All values are computed in float64 with stable forms (``logaddexp``, a clipped sigmoid via ``expit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import expit

LossKind = Literal["pairwise", "pointwise"]


@dataclass(frozen=True)
class LogisticDesign:
    """The design of a Phase II problem: ``A`` (n, m) float64 plus the loss constants."""

    A: np.ndarray
    beta: float
    shift: float
    l2: float

    @property
    def n(self) -> int:
        return int(self.A.shape[0])

    @property
    def m(self) -> int:
        return int(self.A.shape[1])

    def logits(self, theta2: np.ndarray) -> np.ndarray:
        """``z_i = beta * A_i . theta2 - c`` (n,); the loss of row i is ``softplus(-z_i)``."""
        return self.beta * (self.A @ theta2) - self.shift

    def value(self, theta2: np.ndarray) -> float:
        """The objective L(theta2) (scalar)."""
        z = self.logits(theta2)
        return float(np.mean(np.logaddexp(0.0, -z)) + 0.5 * self.l2 * float(theta2 @ theta2))

    def gradient(self, theta2: np.ndarray) -> np.ndarray:
        """``-(beta / n) A' sigmoid(-z) + l2 theta2`` (m,)."""
        z = self.logits(theta2)
        return -(self.beta / self.n) * (self.A.T @ expit(-z)) + self.l2 * theta2

    def value_and_gradient(self, theta2: np.ndarray) -> tuple[float, np.ndarray]:
        z = self.logits(theta2)
        value = float(np.mean(np.logaddexp(0.0, -z)) + 0.5 * self.l2 * float(theta2 @ theta2))
        grad = -(self.beta / self.n) * (self.A.T @ expit(-z)) + self.l2 * theta2
        return value, grad

    def hessian(self, theta2: np.ndarray) -> np.ndarray:
        """``(beta^2 / n) A' diag(s (1 - s)) A + l2 I`` (m, m), s = sigmoid(z)."""
        s = expit(self.logits(theta2))
        w = s * (1.0 - s)
        H = (self.beta**2 / self.n) * (self.A.T @ (self.A * w[:, None]))
        H[np.diag_indices_from(H)] += self.l2
        return H

    def lipschitz(self) -> float:
        """An upper bound on the gradient's Lipschitz constant: ``beta^2 ||A||_2^2 / (4 n) + l2``."""
        if self.n == 0:
            return max(self.l2, 1e-12)
        sigma_max = float(np.linalg.norm(self.A, 2))
        return self.beta**2 * sigma_max**2 / (4.0 * self.n) + self.l2

    def batch(self, rows: np.ndarray) -> LogisticDesign:
        """The same loss on a subset of rows (for stochastic solvers)."""
        return LogisticDesign(A=self.A[rows], beta=self.beta, shift=self.shift, l2=self.l2)


def build_design(
    Xw: np.ndarray,
    Xl: np.ndarray,
    *,
    loss: LossKind = "pairwise",
    beta: float = 1.0,
    gamma: float = 0.0,
    margin: float = 0.0,
    l2: float = 0.0,
) -> LogisticDesign:
    """Build the design from Phase-I features of chosen rows ``Xw`` (n, m) and rejected rows ``Xl`` (k, m).

    ``pairwise`` needs ``n == k`` (row i of each is one pair); ``pointwise`` stacks ``[Xw; -Xl]``.
    """
    Xw = np.asarray(Xw, dtype=np.float64)
    Xl = np.asarray(Xl, dtype=np.float64)
    if loss == "pairwise":
        A = Xw - Xl
    elif loss == "pointwise":
        A = np.vstack([Xw, -Xl])
    else:  # validated by Phase2Config; kept for direct callers
        raise ValueError(f"loss must be 'pairwise' or 'pointwise', got {loss!r}")
    return LogisticDesign(A=A, beta=float(beta), shift=float(gamma) + float(margin), l2=float(l2))
