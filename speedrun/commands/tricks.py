"""`python -m speedrun tricks [NAME]`: every registered trick, or one with its settings, their
limits, the record's constants and each track's tuned value (tricks/__init__.py is the
registry)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    tr = sub.add_parser("tricks", help="list tricks, or show one with its hyperparameters",
                        description="List every registered trick, or show one in detail.")
    tr.add_argument("name", nargs="?", help="trick to show")
    return tr


def main(args) -> int:
    from tabulate import tabulate

    import tricks as T
    from speedrun import tracks

    registry = T.available()
    if args.name:
        if args.name not in registry:
            T.resolve([args.name], registry)  # raises with suggestions
        t = registry[args.name]
        print(f"{t.name}: {t.summary}")
        print(f"  changes:   {', '.join(t.changes)}")
        print(f"  source:    {t.source or '-'}")
        print(f"  requires:  {', '.join(t.requires) or '-'}")
        print(f"  conflicts: {', '.join(t.conflicts) or '-'}")
        print(f"  replaces:  {', '.join(t.replaces) or '-'} (hooks it sets outright)")
        if t.params:
            print("  hyperparameters (the record's constants; override with --set "
                  + t.name + ".KEY=VALUE):")
            for line in T.setting_lines(t):
                print("    " + line)
        else:
            print("  hyperparameters: none")
        if t.report is not None:
            cfg = T.configure(T.with_tricks(tracks.get(tracks.DEFAULT).config, [t.name] + list(
                t.requires), registry), registry)
            print(f"  on the default track ({tracks.DEFAULT}): "
                  f"{t.report(cfg, T.hp(t, cfg.tricks[t.name]))}")
        return 0
    rows = [(t.name, ", ".join(t.changes), t.summary, t.source) for t in registry.values()]
    print(tabulate(rows, headers=["trick", "changes", "summary", "source"], tablefmt="simple"))
    print(f"\n{len(rows)} tricks. `python -m speedrun tricks NAME` shows one with its hyperparameters.")
    return 0
