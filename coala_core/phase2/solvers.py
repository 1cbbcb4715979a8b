"""Phase II solvers for the shifted logistic loss of :mod:`coala_core.phase2.losses`.

Each solver has an explicit state, a step function mapping state to state, and a driver loop that owns
stopping and observation. All return a :class:`SolverResult` with the final gradient norm, the optimality
certificate of a convex problem (for a mu-strongly convex objective, ``L(theta) - L* <= ||grad||^2 / (2 mu)``).

* :func:`newton`: Newton's method with an Armijo backtracking line search (monotone; quadratic convergence
  near the optimum). The default: theta2 has only m numbers.
* :func:`accelerated_gradient`: Beck and Teboulle's monotone FISTA (MFISTA) with step 1/L, the O(1/k^2)
  method of the paper's theorem, made monotone by keeping the better of the momentum point and the last
  iterate.
* :func:`adamw`: mini-batch AdamW (decoupled weight decay, as ``torch.optim.AdamW``), in numpy or torch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from coala_core.phase2.losses import LogisticDesign

Observer = Callable[[int, np.ndarray, float, float], None]
"""Called as ``observe(iteration, theta2, loss, grad_norm)`` after every recorded iteration."""


@dataclass
class SolverResult:
    theta2: np.ndarray
    objective: float
    grad_norm: float
    iterations: int
    converged: bool
    solver: str
    losses: list[float] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- Newton


@dataclass(frozen=True)
class NewtonState:
    theta2: np.ndarray
    value: float
    grad: np.ndarray
    iteration: int = 0


def newton_step(design: LogisticDesign, state: NewtonState) -> NewtonState:
    """One damped Newton step: solve H p = -g (Cholesky; a small ridge if H is singular), then backtrack."""
    H = design.hessian(state.theta2)
    g = state.grad
    ridge = 0.0
    while True:
        try:
            L = np.linalg.cholesky(H + ridge * np.eye(design.m))
            break
        except np.linalg.LinAlgError:
            ridge = max(1e-12, 10.0 * ridge) if ridge else 1e-12 * max(1.0, float(np.trace(H)))
    p = -np.linalg.solve(L.T, np.linalg.solve(L, g))
    slope = float(g @ p)
    t = 1.0
    for _ in range(60):
        candidate = state.theta2 + t * p
        value = design.value(candidate)
        if value <= state.value + 1e-4 * t * slope:
            break
        t *= 0.5
    else:
        return state  # no decrease possible at machine precision: the driver stops on stagnation
    value, grad = design.value_and_gradient(candidate)
    return NewtonState(theta2=candidate, value=value, grad=grad, iteration=state.iteration + 1)


def newton(
    design: LogisticDesign,
    theta0: np.ndarray,
    *,
    max_iter: int = 100,
    tol: float = 1e-9,
    observe: Observer | None = None,
    every: int = 1,
) -> SolverResult:
    """Minimise the design's loss by Newton's method from ``theta0`` (m,)."""
    value, grad = design.value_and_gradient(np.asarray(theta0, dtype=np.float64))
    state = NewtonState(theta2=np.asarray(theta0, dtype=np.float64).copy(), value=value, grad=grad)
    losses = [state.value]
    if observe is not None:
        observe(0, state.theta2, state.value, float(np.linalg.norm(state.grad)))
    while float(np.linalg.norm(state.grad)) > tol and state.iteration < max_iter:
        new = newton_step(design, state)
        if new is state:
            break
        state = new
        losses.append(state.value)
        if observe is not None and state.iteration % every == 0:
            observe(state.iteration, state.theta2, state.value, float(np.linalg.norm(state.grad)))
    gnorm = float(np.linalg.norm(state.grad))
    converged = gnorm <= tol or (gnorm <= 1e3 * tol and state.iteration < max_iter)
    if not converged:
        warnings.warn(
            f"Phase II Newton stopped after {state.iteration} iterations with ||grad|| = {gnorm:.3e} > tol "
            f"{tol:.1e} at l2 = {design.l2:g}"
            + ("; on separable pairs the optimum does not exist at l2 = 0 (raise l2)" if design.l2 == 0 else
               " (the loss stopped decreasing at machine precision, or max_iter was reached)"),
            RuntimeWarning,
            stacklevel=2,
        )
    return SolverResult(state.theta2, state.value, gnorm, state.iteration, converged, "newton", losses)


# ------------------------------------------------------------------------------ accelerated gradient


@dataclass(frozen=True)
class AGDState:
    x: np.ndarray  # the monotone iterate
    y: np.ndarray  # the extrapolated point where the gradient is taken
    z_prev: np.ndarray  # the last gradient-step point, for the momentum term
    t: float
    value: float
    iteration: int = 0


def agd_step(design: LogisticDesign, state: AGDState, step: float) -> AGDState:
    """One MFISTA step: z = y - grad(y)/L; x+ = argmin(f(z), f(x)); momentum from z and x+."""
    z = state.y - step * design.gradient(state.y)
    fz = design.value(z)
    x_new, f_new = (z, fz) if fz <= state.value else (state.x, state.value)
    t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * state.t**2))
    y = x_new + (state.t / t_new) * (z - x_new) + ((state.t - 1.0) / t_new) * (x_new - state.x)
    return AGDState(x=x_new, y=y, z_prev=z, t=t_new, value=f_new, iteration=state.iteration + 1)


def accelerated_gradient(
    design: LogisticDesign,
    theta0: np.ndarray,
    *,
    max_iter: int = 5000,
    tol: float = 1e-9,
    observe: Observer | None = None,
    every: int = 1,
) -> SolverResult:
    """Minimise the design's loss by monotone Nesterov/FISTA acceleration with step 1/L from ``theta0``."""
    x0 = np.asarray(theta0, dtype=np.float64).copy()
    step = 1.0 / design.lipschitz()
    state = AGDState(x=x0, y=x0, z_prev=x0, t=1.0, value=design.value(x0))
    losses = [state.value]
    gnorm = float(np.linalg.norm(design.gradient(state.x)))
    if observe is not None:
        observe(0, state.x, state.value, gnorm)
    while gnorm > tol and state.iteration < max_iter:
        state = agd_step(design, state, step)
        losses.append(state.value)
        record = observe is not None and state.iteration % every == 0
        if record or state.iteration % 10 == 0 or state.iteration == max_iter:
            gnorm = float(np.linalg.norm(design.gradient(state.x)))
        if record and observe is not None:
            observe(state.iteration, state.x, state.value, gnorm)
    gnorm = float(np.linalg.norm(design.gradient(state.x)))
    converged = gnorm <= tol
    if not converged:
        warnings.warn(
            f"Phase II accelerated gradient stopped after {state.iteration} iterations with "
            f"||grad|| = {gnorm:.3e} > tol {tol:.1e}",
            RuntimeWarning,
            stacklevel=2,
        )
    return SolverResult(state.x, state.value, gnorm, state.iteration, converged, "agd", losses)


# --------------------------------------------------------------------------------------------- AdamW


@dataclass(frozen=True)
class AdamWState:
    theta2: np.ndarray
    m1: np.ndarray
    m2: np.ndarray
    step: int = 0


ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def adamw_step(state: AdamWState, grad: np.ndarray, lr: float, weight_decay: float) -> AdamWState:
    """One AdamW update, exactly as ``torch.optim.AdamW`` (decoupled decay, bias-corrected moments)."""
    b1, b2 = ADAM_BETAS
    step = state.step + 1
    theta = state.theta2 * (1.0 - lr * weight_decay)
    m1 = b1 * state.m1 + (1.0 - b1) * grad
    m2 = b2 * state.m2 + (1.0 - b2) * grad * grad
    denom = np.sqrt(m2) / math.sqrt(1.0 - b2**step) + ADAM_EPS
    theta = theta - (lr / (1.0 - b1**step)) * m1 / denom
    return replace(state, theta2=theta, m1=m1, m2=m2, step=step)


def batch_order(n: int, epochs: int, batch_size: int, seed: int) -> list[list[np.ndarray]]:
    """The row order of every epoch's mini-batches, shared by the numpy and torch backends."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        perm = rng.permutation(n)
        out.append([perm[i : i + batch_size] for i in range(0, n, batch_size)])
    return out


def adamw(
    design: LogisticDesign,
    theta0: np.ndarray,
    *,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    epochs: int = 500,
    batch_size: int = 128,
    seed: int = 0,
    backend: str = "numpy",
    observe: Observer | None = None,
    every: int = 1,
) -> SolverResult:
    """Mini-batch AdamW on the design's loss; one record per ``every`` epochs (full-batch loss and gradient)."""
    order = batch_order(design.n, epochs, batch_size, seed)
    theta = np.asarray(theta0, dtype=np.float64).copy()
    losses = [design.value(theta)]
    if observe is not None:
        observe(0, theta, losses[0], float(np.linalg.norm(design.gradient(theta))))
    if backend == "torch":
        theta = _adamw_torch(design, theta, order, lr, weight_decay, losses, observe, every)
    else:
        state = AdamWState(theta2=theta, m1=np.zeros_like(theta), m2=np.zeros_like(theta))
        for epoch, batches in enumerate(order, start=1):
            for rows in batches:
                state = adamw_step(state, design.batch(rows).gradient(state.theta2), lr, weight_decay)
            _record(design, state.theta2, epoch, losses, observe, every)
        theta = state.theta2
    value, grad = design.value_and_gradient(theta)
    return SolverResult(theta, value, float(np.linalg.norm(grad)), epochs, False, "adamw", losses)


def _record(design, theta, epoch, losses, observe, every) -> None:
    value, grad = design.value_and_gradient(theta)
    losses.append(value)
    if observe is not None and epoch % every == 0:
        observe(epoch, theta, value, float(np.linalg.norm(grad)))


def _adamw_torch(design, theta, order, lr, weight_decay, losses, observe, every) -> np.ndarray:
    import torch

    A = torch.from_numpy(design.A)
    param = torch.nn.Parameter(torch.from_numpy(theta.copy()))
    opt = torch.optim.AdamW([param], lr=lr, weight_decay=weight_decay, betas=ADAM_BETAS, eps=ADAM_EPS)
    for epoch, batches in enumerate(order, start=1):
        for rows in batches:
            opt.zero_grad()
            z = design.beta * (A[torch.from_numpy(rows)] @ param) - design.shift
            loss = torch.nn.functional.softplus(-z).mean() + 0.5 * design.l2 * (param @ param)
            loss.backward()
            opt.step()
        _record(design, param.detach().numpy().copy(), epoch, losses, observe, every)
    return param.detach().numpy().copy()
