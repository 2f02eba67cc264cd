"""Helpers shared by several tricks (not a trick: modules starting with _ are not registered)."""

from __future__ import annotations

import dataclasses

from speedrun import tracks
from speedrun.data import bytelevel
from speedrun.errors import SpeedrunError


def with_param(cfg, trick: str, key: str, value):
    """The RunConfig with one of a trick's resolved hyperparameters set (for ``configure``)."""
    tricks = dict(cfg.tricks)
    tricks[trick] = {**tricks[trick], key: value}
    return dataclasses.replace(cfg, tricks=tricks)


def resolve_separator(cfg, trick: str, value: int):
    """A trick's ``separator`` setting: -1 means the track's document separator (GPT-2's
    <|endoftext|> 50256 on `wiki`/FineWeb, byte 0 on `wiki-bytes`), written into the config so
    the record shows the token used; an explicit id is kept."""
    if value >= 0:
        if value >= cfg.model.vocab_size:
            raise SpeedrunError(f"{trick}.separator={value} is outside the vocabulary "
                                f"(model.vocab_size {cfg.model.vocab_size})")
        return cfg
    if value != -1:
        raise SpeedrunError(f"{trick}.separator must be -1 (the track's) or a token id, got {value}")
    track = tracks.TRACKS.get(cfg.track)
    if track is None:
        raise SpeedrunError(f"{trick}: the track {cfg.track!r} is unknown, so its document "
                            f"separator is too; set it with --set {trick}.separator=ID")
    return with_param(cfg, trick, "separator", bytelevel.separator(track.rules.tokenizer))
