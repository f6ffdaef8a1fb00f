"""Two-layer ReLU networks as measures over neurons, trained by full-batch gradient descent.

f(x) = (1/m) sum_i a_i relu(<w_i, x>): the network of the empirical measure
mu = (1/m) sum_i delta_{(w_i, a_i)} (mean-field scaling). Gradient descent on the particles
(w_i, a_i) with step lr * m is the time discretisation (dt = lr) of the Wasserstein gradient
flow of the risk (Chizat & Bach 2018; Mei, Montanari & Nguyen 2018), whatever m is.

The output-scale family of lazy training (Chizat, Oyallon & Bach 2019) is the same loop with
the model f_alpha = alpha (f(theta) - f(theta_0)) and the loss divided by alpha^2.

Several independent runs (seeds, or scales alpha) are trained at once: every tensor has a
leading run axis S, w (S, m, d), a (S, m). Gradients are written out by hand (one einsum
each), which is several times faster than autograd at these sizes. float64 throughout.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm


@contextmanager
def _one_thread():
    """Thread-pool overhead dominates these small per-step products (10x on 2 busy cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def teacher(d: int, m0: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Teacher neurons (w* (m0, d), a* (m0,)): directions evenly spaced on the circle when
    d = 2 (uniform on the sphere otherwise), signs alternating +, -, +, ..., and balanced norms
    |a*_j| = |w*_j| = sqrt(m0), so that f*(x) = sum_j s_j relu(<u_j, x>) with unit u_j and
    every teacher atom carries mass |a*_j| |w*_j| / m0 = 1."""
    if d == 2:
        t = 2 * math.pi * torch.arange(m0, dtype=torch.float64) / m0 + math.pi / 2
        u = torch.stack([torch.cos(t), torch.sin(t)], 1)
    else:
        u = torch.randn(m0, d, dtype=torch.float64, generator=generator)
        u = u / u.norm(dim=1, keepdim=True)
    signs = 1.0 - 2.0 * (torch.arange(m0) % 2).double()
    r = math.sqrt(m0)
    return u * r, signs * r


Activation = Literal["relu", "softplus"]


def rho(pre: Tensor, activation: Activation = "relu") -> tuple[Tensor, Tensor]:
    """The non-linearity and its derivative at the pre-activations (relu' = 1{pre > 0})."""
    if activation == "relu":
        return torch.relu(pre), (pre > 0).to(pre.dtype)
    if activation == "softplus":  # a smooth relu: log(1 + e^u), derivative sigmoid(u)
        return torch.nn.functional.softplus(pre), torch.sigmoid(pre)
    raise ValueError(f"unknown activation {activation!r}: use relu or softplus")


def forward(x: Tensor, w: Tensor, a: Tensor, activation: Activation = "relu") -> Tensor:
    """f(x) = (1/m) sum_i a_i rho(<w_i, x>): x (n, d), w (S, m, d), a (S, m) -> (S, n)."""
    act = rho(w @ x.T, activation)[0]  # (S, m, n)
    return (a[:, None, :] @ act).squeeze(1) / a.shape[-1]


def init_particles(
    runs: int,
    m: int,
    d: int,
    scale: float,
    generator: torch.Generator | None = None,
    symmetric: bool = False,
) -> tuple[Tensor, Tensor]:
    """Balanced initial particles: w_i = scale u_i with u_i uniform on the sphere and
    a_i = +-scale (random signs), (S, m, d) and (S, m). symmetric: neurons in pairs (w, a),
    (w, -a) (m even), so that f(theta_0) = 0 exactly (the lazy-training paper's init)."""
    k = m // 2 if symmetric else m
    u = torch.randn(runs, k, d, dtype=torch.float64, generator=generator)
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    s = torch.randint(0, 2, (runs, k), generator=generator).double() * 2 - 1
    if symmetric:
        u, s = torch.cat([u, u], 1), torch.cat([s, -s], 1)
    return u * scale, s * scale


def train(
    x: Tensor,
    y: Tensor,
    w: Tensor,
    a: Tensor,
    steps: int,
    lr: float | Tensor,
    alpha: Tensor | None = None,
    x_test: Tensor | None = None,
    y_test: Tensor | None = None,
    record: int = 0,
    log_points: int = 60,
    progress: bool = True,
    activation: Activation = "relu",
) -> dict[str, Tensor]:
    """Full-batch gradient descent on L = (1/2n) sum_k (g(x_k) - y_k)^2 / alpha^2.

    x (n, d), y (n,); w (S, m, d), a (S, m) the initial particles of S runs; lr: step in
    mean-field time (the particles move by lr * m * gradient), a float or one per run (S,).
    alpha (S,): None trains g = f (mean field); otherwise g = alpha (f - f(theta_0)) with the
    loss divided by alpha^2 (lazy-training family). activation: rho (the mean-field
    experiments use relu; softplus, a smooth relu, is the setting of the lazy-training theorem).
    record: number of snapshots of the particles kept for the trajectory plots (0: none).
    Returns: `w`, `a` (final), `w0`, `a0`, `steps` (log-spaced steps of the curves),
    `loss` (S, T) the unscaled training loss (1/2n) sum (g - y)^2, `test_loss` (S, T)
    likewise on x_test, `traj_w` (R, S, m, d) and `traj_a` (R, S, m) when record > 0.
    """
    n, m = x.shape[0], w.shape[1]
    w0, a0 = w.clone(), a.clone()
    lr = torch.as_tensor(lr, dtype=torch.float64).expand(w.shape[0]).clone()
    f0 = forward(x, w, a, activation) if alpha is not None else None
    lazy_test = alpha is not None and x_test is not None
    f0_test = forward(x_test, w, a, activation) if lazy_test else None
    log_at = set(torch.unique(torch.logspace(0, math.log10(steps), log_points).long()).tolist())
    log_at |= {0, steps}
    rec_at = set(torch.linspace(0, steps, record).long().tolist()) if record > 0 else set()
    logged, losses, test_losses, traj_w, traj_a = [], [], [], [], []

    def out(xx: Tensor, f_init: Tensor | None) -> Tensor:
        f = forward(xx, w, a, activation)
        return f if alpha is None else alpha[:, None] * (f - f_init)

    with _one_thread():
        for t in tqdm(range(steps + 1), desc=f"GD m={m}", disable=not progress, leave=False):
            pre = w @ x.T  # (S, m, n)
            act, dact = rho(pre, activation)
            g = (a[:, None, :] @ act).squeeze(1) / m  # (S, n)
            if alpha is not None:
                g = alpha[:, None] * (g - f0)
            r = g - y
            if t in log_at:
                logged.append(t)
                losses.append(0.5 * (r**2).mean(1))
                if x_test is not None:
                    test_losses.append(0.5 * ((out(x_test, f0_test) - y_test) ** 2).mean(1))
            if t in rec_at:
                traj_w.append(w.clone())
                traj_a.append(a.clone())
            if t == steps:
                break
            # dL/dg_k = r_k / n, dg/df = alpha, and the loss carries 1/alpha^2: r_k / (n alpha)
            coef = r / n if alpha is None else r / (n * alpha[:, None])
            # m x gradient: the 1/m of f cancels the mean-field step scale m
            grad_a = (act @ coef[:, :, None]).squeeze(-1)
            grad_w = (dact * coef[:, None, :]) @ x * a[:, :, None]
            a = a - lr[:, None] * grad_a
            w = w - lr[:, None, None] * grad_w
    res = {
        "w": w,
        "a": a,
        "w0": w0,
        "a0": a0,
        "steps": torch.tensor(logged),
        "loss": torch.stack(losses, 1),
    }
    if test_losses:
        res["test_loss"] = torch.stack(test_losses, 1)
    if record > 0:
        res["traj_w"], res["traj_a"] = torch.stack(traj_w), torch.stack(traj_a)
    return res


def _relu_gram(w: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """E_x[relu(<w_i,x>) relu(<v_j,x>)] for x ~ N(0, I_d) and the pieces of its gradient.

    w (S, m, d), v (S, k, d) -> G, P, Q (S, m, k) with G = |w||v| (sin t + (pi - t) cos t)/(2 pi)
    (the arc-cosine kernel, t the angle of w_i and v_j) and dG_ij/dw_i = P_ij v_j + Q_ij w_i/|w_i|,
    P = (pi - t) / (2 pi), Q = |v_j| sin t / (2 pi): gradients are then matrix products,
    memory m k, not m k d.
    """
    nw, nv = w.norm(dim=-1).clamp_min(1e-300), v.norm(dim=-1).clamp_min(1e-300)
    c = ((w @ v.transpose(1, 2)) / (nw[..., None] * nv[:, None, :])).clamp(-1, 1)
    t = torch.arccos(c)
    sin = (1 - c**2).clamp_min(0).sqrt()
    g = nw[..., None] * nv[:, None, :] * (sin + (math.pi - t) * c) / (2 * math.pi)
    return g, (math.pi - t) / (2 * math.pi), nv[:, None, :] * sin / (2 * math.pi)


def teacher_risk(w_star: Tensor, a_star: Tensor) -> float:
    """(1/2) E_x f*(x)^2 for x ~ N(0, I_d): the population risk of the zero predictor."""
    g = _relu_gram(w_star[None], w_star[None])[0][0]
    return float(a_star @ g @ a_star) / (2 * w_star.shape[0] ** 2)


def train_population(
    w: Tensor,
    a: Tensor,
    w_star: Tensor,
    a_star: Tensor,
    steps: int,
    lr: float,
    record: int = 0,
    log_points: int = 60,
    progress: bool = True,
) -> dict[str, Tensor]:
    """GD on the population risk of a relu teacher for Gaussian inputs x ~ N(0, I_d), exactly.

    L = (1/2) E_x (f(x) - f*(x))^2 is a quadratic form in the arc-cosine kernel of the
    particles (`_relu_gram`), so no samples are drawn and no overfitting is possible: the risk
    itself is minimised, at cost m (m + m0) d per step whatever d. Same arguments and outputs
    as `train` (with `loss` the population risk and no `test_loss`); relu only.
    """
    runs, m = w.shape[0], w.shape[1]
    m0 = w_star.shape[0]
    ws = w_star.expand(runs, -1, -1)
    const = teacher_risk(w_star, a_star)
    w0, a0 = w.clone(), a.clone()
    log_at = set(torch.unique(torch.logspace(0, math.log10(steps), log_points).long()).tolist())
    log_at |= {0, steps}
    rec_at = set(torch.linspace(0, steps, record).long().tolist()) if record > 0 else set()
    logged, losses, traj_w, traj_a = [], [], [], []
    with _one_thread():
        for t in tqdm(range(steps + 1), desc=f"GD m={m}", disable=not progress, leave=False):
            g_ss, p_ss, q_ss = _relu_gram(w, w)
            g_st, p_st, q_st = _relu_gram(w, ws)
            # dL/da_i = (1/m^2) sum_j a_j G_ij - (1/(m m0)) sum_j a*_j G*_ij, times m (step)
            ga = (g_ss @ a[..., None]).squeeze(-1) / m - (g_st @ a_star) / m0
            if t in log_at:
                quad = (a[:, None, :] @ g_ss @ a[..., None]).squeeze((1, 2)) / (2 * m**2)
                cross = (a * (g_st @ a_star)).sum(-1) / (m * m0)
                logged.append(t)
                losses.append((quad - cross + const).clamp_min(0))
            if t in rec_at:
                traj_w.append(w.clone())
                traj_a.append(a.clone())
            if t == steps:
                break
            # sum_j c_j dG_ij/dw_i = (P c) v + (Q c) w_i / |w_i|, with c = a / m and -a* / m0
            c_s, c_t = a[:, None, :] / m, -a_star / m0
            gw = (p_ss * c_s) @ w + (p_st * c_t) @ ws
            radial = (q_ss * c_s).sum(-1) + (q_st * c_t).sum(-1)
            gw = gw + radial[..., None] * w / w.norm(dim=-1, keepdim=True).clamp_min(1e-300)
            gw = gw * a[..., None]
            a = a - lr * ga
            w = w - lr * gw
    res = {"w": w, "a": a, "w0": w0, "a0": a0, "steps": torch.tensor(logged)}
    res["loss"] = torch.stack(losses, 1)
    if record > 0:
        res["traj_w"], res["traj_a"] = torch.stack(traj_w), torch.stack(traj_a)
    return res


def measure_distance(
    w: Tensor, a: Tensor, w_star: Tensor, a_star: Tensor, kappa: float = 20.0
) -> Tensor:
    """Distance of the student's measure to the teacher's, relative to the teacher's norm.

    By 2-homogeneity of relu, neuron (w, a) is the signed mass a |w| / m at the direction
    u = w / |w|. Since relu(t) - relu(-t) = t, a network determines its measure only up to odd
    parts with zero first moment: a mass at -u is worth the same mass at u plus a linear
    function, and gradient descent does end on such equivalent measures. So the measures are
    compared folded onto directions up to sign, by the kernel distance (MMD)
    |mu - nu|_k with k(u, v) = exp(-kappa (1 - <u, v>^2)), a Gaussian kernel of the lines
    u u^T (characteristic, so 0 iff the folded measures are equal; it resolves angles of
    about 1 / sqrt(kappa)). w (S, m, d), a (S, m), w_star (m0, d), a_star (m0,) -> (S,),
    divided by |nu|_k.
    """
    m, m0 = w.shape[1], w_star.shape[0]
    norm = w.norm(dim=-1)
    signed = torch.sign(a) * a.abs() * norm / m  # (S, m)
    u = w / norm[..., None].clamp_min(1e-300)
    u_star = w_star / w_star.norm(dim=-1, keepdim=True)
    target = torch.sign(a_star) * a_star.abs() * w_star.norm(dim=-1) / m0

    def k(p: Tensor, q: Tensor) -> Tensor:
        return torch.exp(-kappa * (1 - (p @ q.T) ** 2))

    tt = target @ k(u_star, u_star) @ target
    out = []
    for s in range(w.shape[0]):  # one run at a time: memory m^2, not S m^2
        ss = signed[s] @ k(u[s], u[s]) @ signed[s]
        st = signed[s] @ k(u[s], u_star) @ target
        out.append((ss - 2 * st + tt).clamp_min(0).sqrt())
    return torch.stack(out) / tt.sqrt()


def relative_change(w: Tensor, a: Tensor, w0: Tensor, a0: Tensor) -> Tensor:
    """|theta - theta_0| / |theta_0| per run, theta = (w, a): (S,)."""
    num = ((w - w0) ** 2).sum((1, 2)) + ((a - a0) ** 2).sum(1)
    den = (w0**2).sum((1, 2)) + (a0**2).sum(1)
    return (num / den).sqrt()


def pattern_change(x: Tensor, w: Tensor, w0: Tensor) -> Tensor:
    """Fraction of (input, neuron) pairs whose relu pattern 1{<w_i, x_k> > 0} changed: (S,)."""
    return ((w0 @ x.T > 0) != (w @ x.T > 0)).double().mean((1, 2))
