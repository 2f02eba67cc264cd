"""Records: what a run claims, how it is stored, checked and ranked.

    record       the record.yaml schema: build, write (atomic, never overwriting), load, summary
    logs         a seed's log: the lines a run writes and the parser that reads them back
    verify       every check a record must pass (`verify`), logs and track rules included
    stats        the claim's one-sided t-test, per-seed summaries, time ratios
    leaderboard  leaderboard.md and its plots (`leaderboard`)
    plots        headless, byte-reproducible plots

May import: speedrun.errors, speedrun.config, speedrun.tracks, speedrun.data, speedrun.core,
tricks. Never training or inference: a record is checked without running anything.
"""
