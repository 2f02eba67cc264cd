"""Training runs and the commands that make them.

    plan          a run's configuration resolved, checked and prepared once (track, data,
                  hooks, validation set, fingerprints, environment), shared by every command
    state         the initial parameters and optimizer state (train and bench share them)
    train         the timed loop of one seed: compile and warm up, train, validate, result
    evaluate      the validation loss, during a run and of a saved model (`eval`)
    console       progress bar and log lines
    run           `run`: every seed of a configuration, then its record
    fallback      a finished run's results when its record cannot be written (`recover`)
    find_steps    `find-steps`: the fewest steps that make a claim
    compare       `compare`: two configurations interleaved on one machine
    submit        `submit`: a claim timed against the track's #1 on this machine, linked to it
    sweep         `sweep`: a grid of settings, one record per point, paired by seed; resumes
    bench         `bench`: step time, tokens/s, MFU, where the time goes; decode speed
    hardware      what a run ran on: devices, versions, the machine-speed probe
    compile_cache the persistent compilation cache

May import: every package below it, speedrun.errors, speedrun.config, speedrun.tracks,
speedrun.data, speedrun.core, speedrun.distributed, tricks, speedrun.records,
speedrun.inference.
"""
