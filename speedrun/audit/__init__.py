"""Checks of a record that run its model: what no file can vouch for by itself.

    step0    each seed's logged step-0 validation loss against its model re-initialised here
             (no training): a copied or jittered seed fails
    replay   a record's seeds trained again on this machine, the curve compared with the logged
             one (`verify --replay`)

May import: speedrun.errors, speedrun.config, speedrun.tracks, speedrun.data, speedrun.core,
speedrun.distributed, tricks, speedrun.records, speedrun.inference, speedrun.training.
"""
