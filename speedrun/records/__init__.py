"""Records: what a run claims, how it is stored, checked and ranked.

    record       the record.yaml schema: build, write (atomic, never overwriting), load, summary
    logs         a seed's log: the lines a run writes and the parser that reads them back
    verify       every check a record must pass (`verify`), logs and track rules included
    stats        the claim's one-sided t-test, per-seed summaries, time ratios
    leaderboard  leaderboard.md and its plots (`leaderboard`)
    sittings     which seeds one machine timed in one stretch of time, as the logs say
    timescale    each track's one time scale, fitted from every sitting (configuration and
                 sitting effects on log time)
    standings    one entry per configuration: its claim pooled over its seeds, its time on
                 the scale, ranked or listed with the reason
    hardware_class  a record's class, derived from its device facts
    legacy       the records written before sittings were logged, accepted as committed
    provenance   the sha256 of the code a run ran and its packages' versions, and what moved
    plots        headless, byte-reproducible plots

May import: speedrun.errors, speedrun.config, speedrun.tracks, speedrun.data, speedrun.core,
tricks. Never training or inference: a record is checked without running anything.
"""
