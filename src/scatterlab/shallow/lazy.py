"""Lazy training (Chizat, Oyallon & Bach 2019): the scaled model and its linearisation.

The family g_alpha(theta) = alpha (f(theta) - f(theta_0)) trained by gradient descent on
L(g_alpha) / alpha^2 moves theta by O(1/alpha): for large alpha training follows the
linearised model g_lin(theta) = alpha <grad f(theta_0), theta - theta_0>, i.e. kernel
regression with the tangent kernel K(x, x') = <grad f(x; theta_0), grad f(x'; theta_0)>.
With the square loss the residual of the linearised model evolves without alpha:
r_{t+1} = (I - (lr / n) K_XX) r_t, so g_lin is computed exactly from the kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scatterlab.shallow.twolayer import Activation, rho


def tangent_kernel_two_layer(
    x1: Tensor, x2: Tensor, w: Tensor, a: Tensor, activation: Activation = "relu"
) -> Tensor:
    """Exact tangent kernel of f(x) = (1/m) sum_i a_i rho(<w_i, x>) at (w (m, d), a (m,)).

    K(x, x') = (1/m^2) sum_i [rho(<w_i,x>) rho(<w_i,x'>) + a_i^2 rho'(<w_i,x>)
    rho'(<w_i,x'>) <x, x'>]: x1 (n1, d), x2 (n2, d) -> (n1, n2).
    """
    (r1, d1), (r2, d2) = rho(x1 @ w.T, activation), rho(x2 @ w.T, activation)  # (n, m)
    k_w = (d1 * a**2) @ d2.T * (x1 @ x2.T)
    return (r1 @ r2.T + k_w) / w.shape[0] ** 2


def tangent_kernel(
    fn: Callable[[dict[str, Tensor], Tensor], Tensor],
    params: dict[str, Tensor],
    x1: Tensor,
    x2: Tensor,
) -> Tensor:
    """Tangent kernel J(x1) J(x2)^T of any model by Jacobians (torch.func).

    fn(params, x) -> (n,) outputs; params: the point of linearisation. Returns (n1, n2).
    Memory n x (number of parameters): meant for small models and the tests.
    """

    def jac(x: Tensor) -> Tensor:
        j = torch.func.jacrev(fn)(params, x)  # {name: (n, *shape)}
        return torch.cat([v.reshape(x.shape[0], -1) for v in j.values()], 1)

    return jac(x1) @ jac(x2).T


def linearised_predictions(
    k_train: Tensor, k_test: Tensor, y: Tensor, steps: int, lr: float
) -> dict[str, Tensor]:
    """Gradient descent of the linearised model, exactly in function space.

    k_train (n, n) = m K(X, X) and k_test (n_t, n) = m K(X_test, X): the tangent kernel times
    the mean-field step scale m (so that `lr` is the same step as in `twolayer.train`); the
    model starts at g = 0. Returns the final predictions `train` (n,) and `test` (n_t,).
    """
    n = y.shape[0]
    r = -y.clone()
    acc = torch.zeros_like(y)  # sum_t r_t: g_lin(x) = -(lr / n) k(x, X) sum_t r_t
    for _ in range(steps):
        acc += r
        r = r - (lr / n) * (k_train @ r)
    return {"train": r + y, "test": -(lr / n) * (k_test @ acc)}
