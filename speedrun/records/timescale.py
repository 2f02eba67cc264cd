"""One time scale per track and hardware class, fitted from every sitting that measured it.

A *sitting* is one machine over one stretch of time (one `run`, `compare`, `submit` or `sweep`
command): every seed it times shares the machine's speed at that moment. Machines of one class
differ ~3x, and one machine drifts ~15% between its own sittings, so a seed's time says as much
about its sitting as about its configuration. The model, on the log of each seed's train time:

    log t = a[configuration] + b[sitting] + e,        e ~ N(0, sd_seed^2)

- a sitting on the section's reference machine (its probes within ``tracks.SPEED_TOLERANCE`` of
  the declared speed) has a random effect b ~ N(0, sd_sitting^2): the reference machine's
  sittings define the scale on average, and one lucky or unlucky sitting moves an estimate only
  as far as the data say;
- any other sitting has a free (fixed) effect: a machine of unknown speed says nothing about the
  scale, only about the ratios of the configurations it timed side by side.

``sd_seed`` and ``sd_sitting`` are fitted by REML, pooled over the sections of one hardware
class (they describe the machines, not the track); where no configuration of the class was
timed in two reference sittings, ``sd_sitting`` cannot be told from the configurations' own
effects and ``DEFAULT_SD_SITTING`` stands in. The configurations' effects come by generalised
least squares with their covariance, so an estimate's interval carries the uncertainty of the
sittings it rests on, and two configurations timed side by side compare more precisely than
their separate intervals suggest (``difference``). A configuration connected to no reference
sitting through shared sittings has no place on the scale: it is left out (listed, not ranked).

Everything here is a pure function of the observations: the ranking depends only on what was
measured, never on which record a contributor links to which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# log-scale sd of a reference-machine sitting's speed when the records cannot estimate it (no
# configuration timed in two reference sittings of the class): the committed `wiki-bytes`
# records' estimate (docs/records.md), rounded up.
DEFAULT_SD_SITTING = 0.10


@dataclass(frozen=True)
class Observation:
    """One seed's train time, where it was measured."""

    section: tuple  # (track, hardware class)
    config: str  # the configuration's hash
    sitting: str  # the sitting's id
    reference: bool  # whether the sitting ran on the section's reference machine
    time_s: float


@dataclass(frozen=True)
class Section:
    """The fit of one (track, hardware class): each configuration's log time on the reference
    scale with the covariance of those estimates, and each sitting's effect."""

    configs: tuple  # configurations on the scale, in the order of ``log_time``
    log_time: np.ndarray
    cov: np.ndarray
    sittings: dict  # sitting id -> (effect on log time, whether a reference sitting)
    unplaced: tuple  # configurations connected to no reference sitting
    df: int  # residual degrees of freedom of the class's fit (for t intervals)
    sd_seed: float
    sd_sitting: float
    sd_sitting_fitted: bool  # False: DEFAULT_SD_SITTING stood in
    seeds: dict = field(default_factory=dict)  # config -> seeds timed

    def index(self, config: str) -> int | None:
        try:
            return self.configs.index(config)
        except ValueError:
            return None

    def time(self, config: str) -> tuple[float, float, float] | None:
        """(estimate, low, high) in seconds on the reference scale, 95%; None: not placed."""
        i = self.index(config)
        if i is None:
            return None
        se, q = math.sqrt(self.cov[i, i]), t_quantile(self.df)
        mu = float(self.log_time[i])
        return math.exp(mu), math.exp(mu - q * se), math.exp(mu + q * se)

    def difference(self, a: str, b: str) -> tuple[float, float, float] | None:
        """Time ratio a / b with its 95% interval, from the joint covariance (None: not both
        placed)."""
        i, j = self.index(a), self.index(b)
        if i is None or j is None:
            return None
        d = float(self.log_time[i] - self.log_time[j])
        se = math.sqrt(max(self.cov[i, i] + self.cov[j, j] - 2 * self.cov[i, j], 0.0))
        q = t_quantile(self.df)
        return math.exp(d), math.exp(d - q * se), math.exp(d + q * se)


def t_quantile(df: int) -> float:
    from scipy import stats  # imported on first use: scipy costs ~1 s to import

    return float(stats.t.ppf(0.975, max(df, 1)))


def components(obs: list[Observation]) -> list[set[str]]:
    """Sets of configurations joined by shared sittings (union-find over the observations)."""
    parent: dict[str, str] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for o in obs:
        parent[find("c:" + o.config)] = find("s:" + o.sitting)
    groups: dict[str, set[str]] = {}
    for o in obs:
        groups.setdefault(find("c:" + o.config), set()).add(o.config)
    return list(groups.values())


@dataclass
class _Design:
    """One section's regression: y, fixed effects X (configurations, then non-reference
    sittings), random effects Z (reference sittings)."""

    y: np.ndarray
    X: np.ndarray
    Z: np.ndarray
    configs: list
    fixed_sittings: list
    random_sittings: list


def _design(obs: list[Observation]) -> _Design:
    configs = sorted({o.config for o in obs})
    fixed = sorted({o.sitting for o in obs if not o.reference})
    rand = sorted({o.sitting for o in obs if o.reference})
    ci = {c: i for i, c in enumerate(configs)}
    fi = {s: len(configs) + i for i, s in enumerate(fixed)}
    ri = {s: i for i, s in enumerate(rand)}
    X = np.zeros((len(obs), len(configs) + len(fixed)))
    Z = np.zeros((len(obs), len(rand)))
    for n, o in enumerate(obs):
        X[n, ci[o.config]] = 1.0
        if o.reference:
            Z[n, ri[o.sitting]] = 1.0
        else:
            X[n, fi[o.sitting]] = 1.0
    y = np.log(np.array([o.time_s for o in obs], float))
    return _Design(y, X, Z, configs, fixed, rand)


def _gls(d: _Design, sd_seed: float, sd_sitting: float):
    """(beta, cov(beta), V^-1 residuals, REML log-likelihood terms) at the given sds."""
    V = sd_seed**2 * np.eye(len(d.y)) + sd_sitting**2 * d.Z @ d.Z.T
    L = np.linalg.cholesky(V)
    Xw = np.linalg.solve(L, d.X)
    yw = np.linalg.solve(L, d.y)
    A = Xw.T @ Xw
    cov = np.linalg.inv(A)
    beta = cov @ (Xw.T @ yw)
    rw = yw - Xw @ beta
    logdet_v = 2 * np.log(np.diag(L)).sum()
    logdet_a = np.linalg.slogdet(A)[1]
    reml = -0.5 * (logdet_v + logdet_a + rw @ rw)
    return beta, cov, np.linalg.solve(L.T, rw), reml


def _identifiable(designs: list[_Design]) -> bool:
    """Whether some configuration was timed in two reference sittings (else sd_sitting is
    confounded with the configurations' own effects)."""
    for d in designs:
        if not d.random_sittings:
            continue
        per_config = (d.X[:, :len(d.configs)].T @ d.Z) > 0  # config x reference sitting
        if (per_config.sum(axis=1) >= 2).any():
            return True
    return False


def _fit_sds(designs: list[_Design]) -> tuple[float, float, bool]:
    """REML estimates of (sd_seed, sd_sitting) shared by the designs, and whether sd_sitting
    was estimated (rather than DEFAULT_SD_SITTING)."""
    from scipy import optimize

    fit_sitting = _identifiable(designs)

    def negative(theta):
        s_e = math.exp(theta[0])
        s_b = math.exp(theta[1]) if fit_sitting else DEFAULT_SD_SITTING
        return -sum(_gls(d, s_e, s_b)[3] for d in designs)

    start = [math.log(0.03), math.log(DEFAULT_SD_SITTING)]
    best = optimize.minimize(negative, start, method="Nelder-Mead",
                             options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 400})
    s_e = math.exp(best.x[0])
    s_b = math.exp(best.x[1]) if fit_sitting else DEFAULT_SD_SITTING
    return s_e, s_b, fit_sitting


def fit(observations: list[Observation]) -> dict[tuple, Section]:
    """{(track, hardware class): Section} over every section in ``observations``."""
    by_section: dict[tuple, list[Observation]] = {}
    for o in observations:
        by_section.setdefault(o.section, []).append(o)
    placed, unplaced = {}, {}
    for key, obs in by_section.items():
        keep: set[str] = set()
        for comp in components(obs):
            if any(o.reference for o in obs if o.config in comp):
                keep |= comp
        placed[key] = [o for o in obs if o.config in keep]
        unplaced[key] = tuple(sorted({o.config for o in obs} - keep))
    out = {}
    classes = sorted({key[1] for key in by_section})
    for hw in classes:
        keys = [k for k in sorted(by_section) if k[1] == hw]
        designs = {k: _design(placed[k]) for k in keys if placed[k]}
        if designs:
            s_e, s_b, fitted = _fit_sds(list(designs.values()))
            df = sum(len(d.y) - d.X.shape[1] for d in designs.values())
        for k in keys:
            if k not in designs:
                out[k] = Section((), np.zeros(0), np.zeros((0, 0)), {}, unplaced[k], 1,
                                 float("nan"), float("nan"), False,
                                 _seeds(by_section[k]))
                continue
            d = designs[k]
            beta, cov, vinv_r, _ = _gls(d, s_e, s_b)
            n = len(d.configs)
            effects = {s: (float(beta[n + i]), False) for i, s in enumerate(d.fixed_sittings)}
            blup = s_b**2 * d.Z.T @ vinv_r  # the reference sittings' predicted effects
            effects.update({s: (float(blup[i]), True) for i, s in enumerate(d.random_sittings)})
            out[k] = Section(tuple(d.configs), beta[:n], cov[:n, :n], effects, unplaced[k],
                             max(df, 1), s_e, s_b, fitted, _seeds(by_section[k]))
    return out


def _seeds(obs: list[Observation]) -> dict:
    out: dict[str, int] = {}
    for o in obs:
        out[o.config] = out.get(o.config, 0) + 1
    return out
