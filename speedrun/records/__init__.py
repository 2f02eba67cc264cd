"""Records: what a run claims, how it is stored, checked and ranked.

    record       the record.yaml schema: build, write (atomic, never overwriting), load, summary
    logs         a seed's log: the lines a run writes and the parser that reads them back
    verify       every check a record must pass (`verify`), logs and track rules included
    stats        the claim's one-sided t-test, per-seed summaries, time ratios
    leaderboard  leaderboard.md and its plots (`leaderboard`)
    references   same-sitting time references: how a claim made on any machine ranks on its
                 track's one time scale (a ratio to a re-run of a ranked record)
    provenance   the sha256 of the code a run ran and its packages' versions, and what moved
    plots        headless, byte-reproducible plots

May import: speedrun.errors, speedrun.config, speedrun.tracks, speedrun.data, speedrun.core,
tricks. Never training or inference: a record is checked without running anything.
"""
