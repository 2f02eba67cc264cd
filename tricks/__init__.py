"""The trick registry.

A trick is one module in this folder that defines ``TRICK = Trick(...)``. It changes the baseline
only through hook points (speedrun/core/hooks.py): ``apply(hooks, hp)`` returns a new ``Hooks`` with
some functions replaced or wrapped, where ``hp`` holds the trick's resolved hyperparameters
(defaults from ``params``, overridable with ``--set NAME.KEY=VALUE``). A trick that must change
the model's shape (e.g. fewer key/value heads) may also give ``configure(cfg, hp) -> cfg``,
which must be idempotent.

Most tricks *wrap* a hook (call the previous function). A trick that *replaces* a hook outright
(relu2's activation, muon's optimizer, ...) declares it in ``replaces``: anything an earlier
trick did to that hook would be silently discarded, so the registry refuses a combination in
which another trick touching that hook is not explicitly ordered after the replacing one
(``after`` or ``requires``), and two tricks that replace the same hook.

A trick's ``params`` are the record's constants: the values of the speedrun record (or paper) it
comes from. ``tuned`` may carry, per track, a value a `sweep` chose there, with the sweep record
that chose it (``Tuned``): enabled on that track, the trick starts from the tuned value; on every
other track, from the record's constant (``defaults``). A record stores the values it ran, so
tuning a constant later never changes what an earlier record re-runs.

Resolution is deterministic: the same set of names in any order gives the same application
order (requirements and ``after`` first, then alphabetical), and unknown names, missing
requirements and conflicts fail before anything is compiled.

May import: speedrun.errors, speedrun.config, speedrun.data, speedrun.tracks, speedrun.core.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Mapping

from speedrun import tracks
from speedrun.config import invalid_settings
from speedrun.core.hooks import HOOK_POINTS
from speedrun.core.model import baseline_hooks
from speedrun.errors import SpeedrunError

CHANGES = ("model", "optimizer", "schedule", "data")


@dataclass(frozen=True)
class Limit:
    """The values one hyperparameter may take: numbers in a range (either end open or closed,
    or absent), or one of a few choices. ``Limit()`` allows any value of the default's type
    (numbers still finite: speedrun.config.validate_tricks)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()

    def allows(self, value) -> bool:
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True  # strings and flags: their type is checked when --set parses them
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.lo is None and self.hi is None:
            return "any value"
        if self.hi is None:
            return f"{'above' if self.lo_open else 'at least'} {self.lo:g}"
        if self.lo is None:
            return f"{'below' if self.hi_open else 'at most'} {self.hi:g}"
        return (f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                f"{')' if self.hi_open else ']'}")


ANY = Limit()


def above(x: float) -> Limit:
    return Limit(lo=x, lo_open=True)


def at_least(x: float) -> Limit:
    return Limit(lo=x)


def between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Limit:
    return Limit(lo, hi, lo_open, hi_open)


def one_of(*choices) -> Limit:
    return Limit(choices=tuple(choices))


FRACTION = between(0.0, 1.0)  # [0, 1]
BETA = between(0.0, 1.0, hi_open=True)  # [0, 1): a momentum or an Adam beta
POSITIVE = above(0.0)


@dataclass(frozen=True)
class Tuned:
    """A constant tuned on one track: its value, and the sweep record that chose it
    ('<track>/<record folder>' under records/, the point of the sweep that ran this value)."""

    value: Any
    record: str


@dataclass(frozen=True)
class Trick:
    name: str
    summary: str  # one line
    changes: tuple[str, ...]  # subset of CHANGES
    apply: Callable[[Any, SimpleNamespace], Any]  # (Hooks, hp) -> Hooks
    params: Mapping[str, Any] = field(default_factory=dict)  # hyperparameter defaults
    # The values each hyperparameter may take (every one of ``params`` declares one; flags
    # may use ANY): checked before anything runs, and by `verify`.
    limits: Mapping[str, Limit] = field(default_factory=dict)
    configure: Callable[[Any, SimpleNamespace], Any] | None = None  # (RunConfig, hp) -> RunConfig
    requires: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # apply after these tricks when they are also enabled
    replaces: tuple[str, ...] = ()  # hook points it sets without calling the previous function
    source: str = ""  # modded-nanogpt record and/or paper
    # (RunConfig, hp) -> a line a run prints when it starts (e.g. moe's active parameters)
    report: Callable[[Any, SimpleNamespace], str] | None = None
    # False: the forward pass reads more than each token and the KV cache hold (the previous
    # token, document ids over the whole sequence, routing over the whole batch), so cached
    # decoding (`sample`) would differ from the full forward pass: generation refuses it.
    cached_decoding: bool = True
    # True: the forward pass computes over the batch's tokens together (moe's routing capacity
    # and load-balancing loss), so microbatches would compute something else: a run refuses
    # gradient accumulation with it (speedrun/training/accumulate.py).
    whole_batch: bool = False
    # {track: {hyperparameter: Tuned}}: defaults tuned on a track, replacing the record's
    # constant (``params``) there; checked by ``tuning_problems``.
    tuned: Mapping[str, Mapping[str, Tuned]] = field(default_factory=dict)


def defaults(trick: Trick, track: str) -> dict:
    """A trick's starting hyperparameters on a track: the record's constants, with the values
    tuned on that track in their place."""
    return {**trick.params, **{k: t.value for k, t in trick.tuned.get(track, {}).items()}}


def tuning_problems(trick: Trick) -> list[str]:
    """What is wrong with a trick's tuned values: each must tune one of its hyperparameters on a
    known track, with a value of the constant's type inside its limit, chosen by a record of
    that track."""
    out = []
    for track, values in trick.tuned.items():
        where = f"trick {trick.name!r} tuned on {track!r}"
        if track not in tracks.TRACKS:
            out.append(f"{where}: no such track")
        for key, t in values.items():
            if key not in trick.params:
                out.append(f"{where}: {key!r} is not one of its hyperparameters")
                continue
            default, limit = trick.params[key], trick.limits.get(key, ANY)
            if type(t.value) is not type(default):  # records store it: exactly the constant's type
                out.append(f"{where}: {key} = {t.value!r} is not a {type(default).__name__} "
                           f"like its constant {default!r}")
            elif not limit.allows(t.value):
                out.append(f"{where}: {trick.name}.{key} must be {limit.describe()}, "
                           f"got {t.value!r}")
            if not t.record.startswith(f"{track}/") or t.record.count("/") != 1:
                out.append(f"{where}: {key} names the record {t.record!r}; give the sweep "
                           f"record that chose it as '{track}/<record folder>'")
    return out


def available() -> dict[str, Trick]:
    """Every trick module in this package, by trick name."""
    found: dict[str, Trick] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        trick = getattr(module, "TRICK", None)
        if isinstance(trick, Trick):
            if trick.name in found:
                raise SpeedrunError(f"two trick modules define the trick {trick.name!r}")
            wrong = tuning_problems(trick)
            if wrong:
                raise SpeedrunError(f"tricks/{info.name}.py: " + "; ".join(wrong))
            found[trick.name] = trick
    return found


def parse_names(text: str | None) -> list[str]:
    """``--tricks A,B``: the names, in the order given. Empty text is the baseline; an empty
    entry (``a,,b``) or a name given twice is an error, never silently dropped."""
    if not (text or "").strip():
        return []
    names = [n.strip() for n in text.split(",")]
    if "" in names:
        raise SpeedrunError(f"--tricks {text!r} has an empty entry: give names separated by "
                            f"single commas (no --tricks, or --tricks '', is the baseline)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SpeedrunError(f"--tricks lists {', '.join(twice)} more than once")
    return names


def setting_problems(cfg, registry: Mapping[str, Trick] | None = None) -> list[str]:
    """Every enabled trick's hyperparameter outside its declared limit, each naming it."""
    registry = available() if registry is None else registry
    out = []
    for name, values in cfg.tricks.items():
        if name not in registry:
            continue  # unknown tricks are reported where the list is resolved
        for key, value in values.items():
            limit = registry[name].limits.get(key, ANY)
            if not limit.allows(value):
                out.append(f"{name}.{key} must be {limit.describe()}, got {value!r}")
    return out


def resolve(names: list[str], registry: Mapping[str, Trick] | None = None) -> list[Trick]:
    """Validate a trick list and return it in its one deterministic application order."""
    registry = available() if registry is None else registry
    wanted = sorted(set(names))
    for name in wanted:
        if name not in registry:
            close = difflib.get_close_matches(name, registry, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SpeedrunError(
                f"unknown trick {name!r}{hint} (`python -m speedrun tricks` lists them)"
            )
    chosen = set(wanted)
    for name in wanted:
        t = registry[name]
        missing = [r for r in t.requires if r not in chosen]
        if missing:
            raise SpeedrunError(f"trick {name!r} requires {', '.join(missing)}; add it to --tricks")
        for other in wanted:
            if other != name and (other in t.conflicts or name in registry[other].conflicts):
                a, b = sorted((name, other))
                raise SpeedrunError(f"tricks {a!r} and {b!r} conflict; choose one")
    # Topological order (requires + after), ties broken alphabetically.
    before = {n: {d for d in registry[n].requires + registry[n].after if d in chosen} for n in wanted}
    order: list[str] = []
    while before:
        ready = sorted(n for n, deps in before.items() if not deps - set(order))
        if not ready:
            raise SpeedrunError(f"tricks {', '.join(sorted(before))} have circular ordering")
        order.append(ready[0])
        del before[ready[0]]
    resolved = [registry[n] for n in order]
    _check_replaced_hooks(resolved, registry)
    return resolved


def touched_hooks(trick: Trick) -> set[str]:
    """Hook points (and extras) a trick sets, found by applying it to the baseline."""
    base = baseline_hooks()
    new = trick.apply(base, hp(trick))
    touched = {h for h in HOOK_POINTS if h != "extras" and getattr(new, h) is not getattr(base, h)}
    return touched | {f"extras.{k}" for k in new.extras if new.extras.get(k) is not base.extras.get(k)}


def _ordered_after(registry: Mapping[str, Trick], later: str, earlier: str) -> bool:
    """Whether ``later`` declares (directly or through others) that it comes after ``earlier``."""
    seen, todo = set(), [later]
    while todo:
        name = todo.pop()
        for dep in registry[name].requires + registry[name].after:
            if dep == earlier:
                return True
            if dep in registry and dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return False


def _check_replaced_hooks(chosen: list[Trick], registry: Mapping[str, Trick]) -> None:
    if not any(t.replaces for t in chosen):
        return
    touched = {t.name: touched_hooks(t) for t in chosen}
    for r in chosen:
        for hook in r.replaces:
            for t in chosen:
                if t is r or hook not in touched[t.name]:
                    continue
                if hook in t.replaces:
                    a, b = sorted((r.name, t.name))
                    raise SpeedrunError(f"tricks {a!r} and {b!r} both replace the {hook!r} hook; "
                                        f"one would silently discard the other")
                if not _ordered_after(registry, t.name, r.name):
                    raise SpeedrunError(
                        f"trick {r.name!r} replaces the {hook!r} hook that {t.name!r} also sets, "
                        f"and nothing orders {t.name!r} after it: declare after=({r.name!r},) "
                        f"in {t.name!r} so its change is not discarded")


def hp(trick: Trick, values: Mapping[str, Any] | None = None) -> SimpleNamespace:
    return SimpleNamespace(**{**trick.params, **(values or {})})


def with_tricks(cfg, names: list[str], registry: Mapping[str, Trick] | None = None):
    """RunConfig with the named tricks' default hyperparameters on its track (``defaults``), in
    application order."""
    tricks = {t.name: defaults(t, cfg.track) for t in resolve(names, registry)}
    return dataclasses.replace(cfg, tricks=tricks)


def canonical(cfg, registry: Mapping[str, Trick] | None = None):
    """The same configuration with its tricks re-resolved into the one application order (a
    stored order is never trusted: a record's YAML may list them in any order)."""
    order = resolve(list(cfg.tricks), registry)
    return dataclasses.replace(cfg, tricks={t.name: dict(cfg.tricks[t.name]) for t in order})


def configure(cfg, registry: Mapping[str, Trick] | None = None):
    """Apply the enabled tricks' config changes (after --set overrides)."""
    registry = available() if registry is None else registry
    for name, values in cfg.tricks.items():
        t = registry[name]
        if t.configure is not None:
            cfg = t.configure(cfg, hp(t, values))
    return cfg


def build_hooks(cfg, registry: Mapping[str, Trick] | None = None, checked: bool = True):
    """Baseline hooks with every enabled trick applied in the config's order. ``checked=False``
    skips the limits check: for settings that are traced values inside a step (sweep points
    side by side), whose values were checked before they were traced."""
    registry = available() if registry is None else registry
    found = setting_problems(cfg, registry) if checked else []
    if found:
        raise SpeedrunError(invalid_settings(found))
    hooks = baseline_hooks(cfg.model.compute_dtype)
    for name, values in cfg.tricks.items():
        hooks = registry[name].apply(hooks, hp(registry[name], values))
    return hooks


def reports(cfg, registry: Mapping[str, Trick] | None = None) -> list[str]:
    """The enabled tricks' ``report`` lines for a configuration."""
    registry = available() if registry is None else registry
    return [f"{name}: {registry[name].report(cfg, hp(registry[name], values))}"
            for name, values in cfg.tricks.items() if registry[name].report is not None]


def setting_lines(trick: Trick) -> list[str]:
    """Each hyperparameter's record constant with its limit, then every track's tuned value with
    the record that chose it."""
    out = []
    for k, v in trick.params.items():
        out.append(f"{k} = {v!r}  ({trick.limits.get(k, ANY).describe()})")
        out += [f"  tuned on {track}: {values[k].value!r}, chosen by {values[k].record}"
                for track, values in sorted(trick.tuned.items()) if k in values]
    return out
