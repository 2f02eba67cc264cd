"""The leaderboard's order as a fact: the logs vouch for every field a record states (its
sitting, wall clock, host and date among them), what a record says of itself is derived, one run
cannot count twice, each seed's step 0 is its own, a configuration is one entry whatever
records measured it, its time comes from every sitting, a replay catches consistent forged
logs, and `submit` places a claim from any machine through the sitting it shares with the #1.
Each case builds a record, edits it the way a contributor could, recomputes every hash with
the project's own functions, and shows the edit fails `verify` naming the field, or leaves the
ranking unchanged."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import (ENV, START, TINY, config, one_line_error, record_dirs, result, run_cli,
                     timed, write, write_dataset)
import tricks
from speedrun import cli, tracks
from speedrun.errors import SpeedrunError
from speedrun.audit import replay, step0
from speedrun.config import RunConfig, config_hash, dict_hash
from speedrun.records import leaderboard, legacy, provenance, record, sittings, verify
from speedrun.training import environment, interleave, saving, time_reference

CLAIM = (2.90, 2.91, 2.92)


def claim(tmp_path, trick_names=(), times=(10.0, 10.5, 11.0), probe=400.0, **kw):
    runs = [result(s, v, t, probe=probe) for s, (v, t) in enumerate(zip(CLAIM, times))]
    return write(tmp_path, runs, trick_names, **kw)


def forge(folder, change, keep=()):
    """Edit a record and recompute every hash with the project's own functions, leaving its
    logs untouched: what `verify` must still catch. ``keep``: derived fields left as edited."""
    rec = record.load_record(folder)
    change(rec)
    cfg = RunConfig.from_dict(rec["config"])
    if "config_hash" not in keep:
        rec["config_hash"] = config_hash(cfg)
    rec["tricks"] = {k: dict(v) for k, v in cfg.tricks.items()}
    if "description" not in keep:
        try:  # as a run states it: the tricks in their one application order
            rec["description"] = record.description(tricks.canonical(cfg))
        except SpeedrunError:
            rec["description"] = record.description(cfg)
    rec["summary"] = record.summary(rec["runs"], rec["target"], rec["data"])
    (folder / "record.yaml").write_text(yaml.safe_dump(record.sealed(rec), sort_keys=False))


def forge_logs(folder, edit):
    """Edit every log's text (``edit(seed, text) -> text``) and reseal the record over them."""
    rec = record.load_record(folder)
    shas = {}
    for run in rec["runs"]:
        log = folder / run["log"]
        log.write_text(edit(run["seed"], log.read_text()))
        shas[run["seed"]] = record.sha256_text(log.read_text())
    forge(folder, lambda r: [run.update(log_sha256=shas[run["seed"]]) for run in r["runs"]])


# --- the logs vouch for the record --------------------------------------------------------


@pytest.mark.parametrize("change, field", [
    (lambda r: r["config"]["model"].update(n_layer=1), "config.model.n_layer"),
    (lambda r: r["config"]["model"].update(d_model=16), "config.model.d_model"),
    (lambda r: r["config"]["optim"].update(lr=1e-3), "config.optim.lr"),
    (lambda r: r["config"]["train"].update(batch_size=4), "config.train.batch_size"),
    (lambda r: r["config"]["tricks"].pop("softcap"), "config.tricks.softcap"),
    (lambda r: r["config"]["tricks"].update(relu2={}), "config.tricks.relu2"),
    (lambda r: r.update(hardware_class="8xH100"), "hardware_class"),
    (lambda r: r["environment"].update(jax_version="0.4.0"), "environment.jax_version"),
    (lambda r: r["environment"].update(host_id="host-b"), "environment.host_id"),
    (lambda r: r["sitting"].update(id="another-sitting"), "sitting"),
    (lambda r: r["runs"][1].update(started=r["runs"][1]["ended"]), "started"),
    (lambda r: r["environment"].update(command="python -m speedrun run"), "command"),
])
def test_a_forgery_with_every_hash_recomputed_fails_verify_naming_the_field(tmp_path, change,
                                                                            field):
    folder = claim(tmp_path, ["softcap"])
    assert verify.verify(folder) == []
    forge(folder, change)
    found = verify.verify(folder)
    assert found and all("content hash" not in p and "config_hash" not in p for p in found)
    assert field in found[0], found


def test_a_log_without_a_header_does_not_vouch(tmp_path):
    folder = claim(tmp_path)
    log = folder / "seed0.log"
    log.write_text("\n".join(line for line in log.read_text().splitlines()
                             if not line.startswith("#")) + "\n")
    forge(folder, lambda r: r["runs"][0].update(log_sha256=record.sha256_text(log.read_text())))
    assert any("has no header" in p for p in verify.verify(folder))


def test_tricks_out_of_their_order_in_a_header_are_named(tmp_path):
    folder = claim(tmp_path, ["rotary", "muon"])  # resolved: muon before rotary
    log = folder / "seed0.log"
    text = log.read_text()
    head = [ln for ln in text.splitlines() if ln.startswith("#")]
    body = yaml.safe_load("\n".join(ln[2:] for ln in head))
    body["config"]["tricks"] = dict(reversed(list(body["config"]["tricks"].items())))
    new = "\n".join("# " + ln for ln in yaml.safe_dump(body, sort_keys=False).splitlines())
    log.write_text(new + "\n" + "\n".join(ln for ln in text.splitlines() if not ln.startswith("#")) + "\n")
    forge(folder, lambda r: r["runs"][0].update(log_sha256=record.sha256_text(log.read_text())))
    assert any("application order" in p for p in verify.verify(folder))


def copy_seed(folder, source: int, seed: int):
    """A forged extra seed: the log of ``source`` with its seed lines changed, its run copied."""
    text = (folder / f"seed{source}.log").read_text().replace(f"# seed: {source}\n",
                                                                f"# seed: {seed}\n")
    (folder / f"seed{seed}.log").write_text(text)

    def add(rec):
        run = dict(rec["runs"][source], seed=seed, log=f"seed{seed}.log",
                   log_sha256=record.sha256_text(text))
        rec["runs"].append(run)
    forge(folder, add)


def test_one_run_counted_three_times_is_no_claim(tmp_path):
    folder = write(tmp_path, [result(0, 2.9)])
    copy_seed(folder, 0, 1)
    copy_seed(folder, 0, 2)
    rec = record.load_record(folder)
    assert not rec["summary"]["claim"] and rec["summary"]["p_value"] is None
    found = " ".join(verify.verify(folder))
    assert "seeds 0 and 1 have identical curves: one run counted twice" in found


def test_a_copied_seed_does_not_turn_two_seeds_into_a_claim(tmp_path):
    folder = write(tmp_path, [result(0, 2.90), result(1, 2.91)])
    copy_seed(folder, 0, 2)
    assert any("identical curves" in p for p in verify.verify(folder))


# --- derived, not typed -----------------------------------------------------------------------


def test_a_description_is_derived_from_the_tricks(tmp_path):
    folder = claim(tmp_path, ["muon", "rotary"])
    forge(folder, lambda r: r.update(description="baseline (no tricks)"), keep=("description",))
    assert any("description 'baseline (no tricks)' is not the tricks' 'muon + rotary'" in p
               for p in verify.verify(folder))


def test_a_cpu_run_relabelled_as_an_h100_fails_on_its_device_facts(tmp_path):
    """The class in the yaml and in every log header says 1xH100; the device facts (platform,
    device kind, cores) still say CPU."""
    folder = claim(tmp_path)
    forge_logs(folder, lambda seed, text: text.replace("hardware_class: cpu-2core",
                                                       "hardware_class: 1xH100"))
    forge(folder, lambda r: r.update(hardware_class="1xH100"))
    found = " ".join(verify.verify(folder))
    assert "hardware_class '1xH100' is not what the device facts give" in found
    assert "'cpu-2core'" in found


# --- sittings the logs vouch for ----------------------------------------------------------------


def test_a_record_date_must_be_its_first_seeds_start(tmp_path):
    folder = claim(tmp_path)
    forge(folder, lambda r: r.update(date="2026-12-01"))
    assert any("date '2026-12-01'" in p and "first seed's start" in p
               for p in verify.verify(folder))


def test_records_re_paired_into_another_sitting_are_caught_across_records(tmp_path):
    """A candidate from a 478-GFLOP/s sitting re-paired, logs and hashes and all, with a
    re-run made on another machine probing 198: one sitting cannot read the machine so
    differently, span two hosts, nor run two seeds at once."""
    rerun = claim(tmp_path, name="rerun", probe=198.0, times=(40.0, 40.5, 41.0), sitting="slow",
                  env={**ENV, "host_id": "slow-host"}, start=START)
    cand = claim(tmp_path, ["softcap"], name="cand", probe=478.0, sitting="fast", start=START)
    assert verify.verify_all([rerun, cand]) == {rerun: [], cand: []}
    forge_logs(cand, lambda seed, text: text.replace("# sitting: fast", "# sitting: slow"))
    forge(cand, lambda r: r["sitting"].update(id="slow"))
    assert verify.verify(cand) == []  # alone, the forgery holds
    found = " ".join(verify.verify_all([rerun, cand])[cand])
    assert "not one machine at one speed" in found and "one seed at a time" in found
    assert "names 2 hosts" in found


def test_a_candidate_renamed_out_of_its_sitting_is_caught_by_its_wall_clock(tmp_path):
    """A candidate timed A B A B beside a re-run of the #1 in a fast sitting, its sitting id
    changed (logs, record, hashes) so that it ranks on its own time: its seeds still interleave
    with the re-run's on one host."""
    a = timed([result(s, v, t) for s, (v, t) in enumerate(zip(CLAIM, (10.0, 10.5, 11.0)))],
              start=START, gap_s=25.0)  # seeds at 0-12 s, 37-49.5 s, 74.5-87.5 s
    rerun = write(tmp_path, a, name="rerun", sitting="s")
    b = timed([result(s, v, 9.0) for s, v in enumerate(CLAIM)],
              start="2026-11-24T10:00:14+00:00", gap_s=26.0)  # 14-25 s, 51-62 s, 88-99 s
    cand = write(tmp_path, b, ["softcap"], name="cand", sitting="s")
    assert verify.verify_all([rerun, cand]) == {rerun: [], cand: []}
    forge_logs(cand, lambda seed, text: text.replace("# sitting: s\n", "# sitting: mine\n"))
    forge(cand, lambda r: r["sitting"].update(id="mine"))
    assert verify.verify(cand) == []
    assert any("ran on one host at overlapping times: one sitting, named two" in p
               for p in verify.verify_all([rerun, cand])[cand])


def test_a_sitting_on_two_hosts_is_no_sitting(tmp_path):
    a = claim(tmp_path, name="a", sitting="s", env={**ENV, "host_id": "host-a"})
    b = claim(tmp_path, ["softcap"], name="b", sitting="s", start="2026-11-24T10:02:00+00:00",
              env={**ENV, "host_id": "host-b"})
    assert any("names 2 hosts" in p for p in verify.verify_all([a, b])[b])


def test_same_sitting_links_are_no_longer_a_field_a_record_may_carry(tmp_path):
    """Shopping for a reference: a schema-3 record names none; its sitting is what its logs say."""
    folder = claim(tmp_path)
    forge(folder, lambda r: r.update(reference={"record": "unit/x", "rerun": "unit/y",
                                                "time_ratio": 0.5, "ci95": None}))
    assert any("unknown field(s) reference" in p for p in verify.verify(folder))


# --- one configuration, one entry ----------------------------------------------------------------


def test_a_config_hash_has_one_form(tmp_path):
    folder = claim(tmp_path)
    rec = record.load_record(folder)
    other = dict_hash(rec["config"])
    assert other != rec["config_hash"]
    forge(folder, lambda r: r.update(config_hash=other), keep=("config_hash",))
    assert any("config_hash does not match config" in p for p in verify.verify(folder))


def ranked_rows(tmp_path):
    board = leaderboard.load_all(tmp_path / "records")
    return [e for e in board.entries[("unit", "cpu-2core")] if e.ranked], board


def test_a_re_run_adds_a_measurement_never_an_entry(tmp_path):
    """An honest re-run of the #1 on a faster reference-machine sitting (with its validation
    cadence changed: an execution setting) joins the #1's entry, pooled by seed."""
    first = claim(tmp_path, times=(30.0, 31.0, 32.0), name="first", start=START)
    cfg = config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, eval_every=25))
    again = write(tmp_path, [result(s, v, t) for s, (v, t) in
                             enumerate(zip(CLAIM, (20.0, 21.0, 22.0)))],
                  cfg=cfg, name="again", start="2026-11-25T10:00:00+00:00")
    entries, board = ranked_rows(tmp_path)
    assert len(entries) == 1
    (e,) = entries
    assert e.records == (record.record_id(first), record.record_id(again))
    assert e.summary["seeds"] == 3 and len(e.sittings) == 2
    assert 20.0 < e.time[0] < 32.0  # both sittings count; neither alone decides
    text = leaderboard.render(tmp_path / "records", board)
    assert "+ 1 more" in text.split("### Sittings")[0]


def test_the_scale_is_fitted_from_every_sitting_and_a_candidate_rides_its_own(tmp_path):
    """The #1 timed at 31 s in one reference sitting and 26.5 s in another (the committed
    records' 15%); a candidate 10% faster than it beside it in the second sitting ranks at 0.9x
    the pooled estimate, not 0.9x either sitting's."""
    claim(tmp_path, times=(31.0, 31.3, 31.6), name="a1", sitting="one")
    claim(tmp_path, times=(26.5, 26.6, 26.4), name="a2", sitting="two",
          start="2026-11-24T12:00:00+00:00")
    claim(tmp_path, ["softcap"], times=(23.9, 23.8, 24.0), name="b", sitting="two",
          start="2026-11-24T12:05:00+00:00")
    entries, board = ranked_rows(tmp_path)
    a = next(e for e in entries if not RunConfig.from_dict(
        board.record(e.records[0])["config"]).tricks)
    b = next(e for e in entries if e is not a)
    assert 26.5 < a.time[0] < 31.3
    assert b.time[0] / a.time[0] == pytest.approx(0.9, rel=0.02)
    effects = board.fits[("unit", "cpu-2core")].sittings
    assert effects["one"][0] > 0 > effects["two"][0]


def test_a_slow_machine_places_a_claim_only_beside_a_ranked_configuration(tmp_path):
    a = claim(tmp_path, times=(30.0, 31.0, 32.0), name="a")
    slow = 400.0 / 3
    alone = claim(tmp_path, ["softcap"], times=(81.0, 82.5, 84.0), probe=slow, name="alone",
                  start="2026-11-25T10:00:00+00:00")
    entries, board = ranked_rows(tmp_path)
    assert [e.records for e in entries] == [(record.record_id(a),)]
    note = next(e for e in board.entries[("unit", "cpu-2core")]
                if e.records[0].endswith("alone")).note
    assert "none of the sittings that timed it ran on the reference machine" in note
    # the same candidate timed beside a re-run of a on that machine: placed at the ratio
    claim(tmp_path, times=(93.0, 90.0, 96.0), probe=slow, name="a-rerun", sitting="slow",
          start="2026-11-26T10:00:00+00:00")
    claim(tmp_path, ["softcap"], times=(81.0, 82.5, 84.0), probe=slow, name="beside",
          sitting="slow", start="2026-11-26T10:10:00+00:00")
    entries, _ = ranked_rows(tmp_path)
    assert len(entries) == 2 and entries[0].records[0].endswith("alone")  # one softcap entry
    assert entries[0].time[0] == pytest.approx(31.0 * 82.5 / 93.0, rel=0.05)
    assert alone.name in " ".join(entries[0].records)


def test_jittered_copies_of_one_seed_verify_but_their_step_zero_is_not_theirs(tiny):
    """One real seed copied as three, 1e-4 noise on every logged loss and +-0.5% on its times:
    the file checks pass and the copies make a claim; re-initialising each seed shows seeds 1
    and 2 start where seed 0 does."""
    assert run_cli(tiny, "--steps", "20", "--seed", "0") == 0
    (folder,) = record_dirs(tiny)
    rec = record.load_record(folder)
    rng = np.random.default_rng(0)
    text0 = (folder / "seed0.log").read_text()

    def jitter(text, seed):
        text = text.replace("# seed: 0\n", f"# seed: {seed}\n")
        lines = []
        for line in text.splitlines():
            m = re.match(r"^(step:\d+/\d+ val_loss:)([0-9.]+)( train_time:)([0-9.]+)(ms.*)$", line)
            if m:
                line = (f"{m[1]}{float(m[2]) + rng.normal(0, 1e-4):.6f}{m[3]}"
                        f"{float(m[4]) * (1 + rng.uniform(-0.005, 0.005)):.1f}{m[5]}")
            lines.append(line)
        return "\n".join(lines) + "\n"

    runs = [rec["runs"][0]]
    for seed in (1, 2):
        text = jitter(text0, seed)
        (folder / f"seed{seed}.log").write_text(text)
        parsed = verify.parse_log(text)
        run = dict(rec["runs"][0], seed=seed, log=f"seed{seed}.log",
                   log_sha256=record.sha256_text(text))
        tokens = {p[0]: p[2] for p in rec["runs"][0]["curve"]}
        run["curve"] = [[s, t, tokens[s], v] for s, t, v in parsed["vals"]]
        run["final_val_loss"], run["train_time_s"] = run["curve"][-1][3], run["curve"][-1][1]
        run["reached"] = run["final_val_loss"] <= rec["target"]
        run["first_reached"] = (lambda c: None if c is None else list(c))(
            record.first_crossing(run["curve"], rec["target"]))
        runs.append(run)
    forge(folder, lambda r: r.update(runs=runs))
    assert verify.verify(folder) == []  # every file agrees with every other
    found = step0.Checker().problems(record.load_record(folder))
    assert [p.split(")")[0] for p in found] == ["runs (seed 1", "runs (seed 2"], found
    assert "is not seed 1's initial model's" in found[0]
    assert step0.Checker().problems(rec) == []  # the real seed vouches for itself


@pytest.mark.slow
def test_a_replay_passes_a_real_record_and_fails_one_lowered_by_five_hundredths(tiny, capsys):
    assert run_cli(tiny, "--steps", "20", "--seeds", "2") == 0
    (folder,) = record_dirs(tiny)
    assert cli.main(["verify", str(folder), "--replay", "--replay-seeds", "1", "--quiet"]) == 0
    assert "seed 1: largest |logged - replayed|" in capsys.readouterr().out

    def lower(seed, text):  # every validation after step 0 (step 0 has its own check)
        return re.sub(r"^step:([1-9]\d*)/(\d+) val_loss:([0-9.]+)",
                      lambda m: f"step:{m[1]}/{m[2]} val_loss:{float(m[3]) - 0.05:.6f}", text,
                      flags=re.M)

    def lowered(r):
        for run in r["runs"]:
            run["curve"] = [[s, t, n, round(v - 0.05, 6) if s else v] for s, t, n, v
                            in run["curve"]]
            run["final_val_loss"] = run["curve"][-1][3]
            run["reached"] = run["final_val_loss"] <= r["target"]
            crossing = record.first_crossing(run["curve"], r["target"])
            run["first_reached"] = None if crossing is None else list(crossing)

    naive = folder.with_name(folder.name + "-all")  # step 0 lowered too: step 0 catches it
    shutil.copytree(folder, naive)
    forge_logs(naive, lambda seed, text: re.sub(
        r"val_loss:([0-9.]+)", lambda m: f"val_loss:{float(m[1]) - 0.05:.6f}", text))
    forge(naive, lambda r: [run.update(curve=[[s, t, n, round(v - 0.05, 6)] for s, t, n, v
                                              in run["curve"]]) for run in r["runs"]] and None)
    assert any("step-0 val loss" in p for p in step0.Checker().problems(record.load_record(naive)))
    shutil.rmtree(naive)
    forge_logs(folder, lower)
    forge(folder, lowered)
    assert verify.verify(folder) == []  # consistent logs: only training again catches them
    assert cli.main(["verify", str(folder), "--quiet"]) == 0  # step 0 is each seed's own
    assert cli.main(["verify", str(folder), "--replay", "--replay-seeds", "0", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"seed 0 step 10: logged val loss [0-9.]+, replayed [0-9.]+ "
                     r"\(\|Δ\| 0\.0500 > 0\.03\)", out), out


def test_replay_refuses_bad_input_in_one_line(tiny, capsys, monkeypatch):
    folder = claim(tiny, name="unit-claim")
    assert cli.main(["verify", str(folder), "--replay-seeds", "0"]) == 1
    one_line_error(capsys, "--replay-seeds chooses the seeds of --replay")
    assert cli.main(["verify", str(folder), "--replay", "--replay-seeds", "7", "--no-step0"]) == 1
    out = capsys.readouterr()
    assert "--replay-seeds 7: the record has seeds 0,1,2 only" in out.err
    # the unit track has no data anywhere: the replay says so before anything trains
    monkeypatch.setattr(replay, "run_seed", lambda *a, **k: pytest.fail("trained anyway"))
    assert cli.main(["verify", str(folder), "--replay", "--no-step0"]) == 1
    assert "no unit shards" in capsys.readouterr().err


# --- legacy records ------------------------------------------------------------------------------


def test_committed_schema_2_records_are_accepted_only_as_committed(tmp_path):
    pinned = sorted(legacy.pinned().values())
    assert pinned, "the committed records predate logged sittings"
    rid = next(r for r in pinned if r.startswith("wiki-bytes/"))
    folder = tmp_path / "records" / rid
    shutil.copytree(Path(__file__).resolve().parents[1] / "records" / rid, folder)
    assert verify.verify(folder) == []
    forge(folder, lambda r: r["runs"][0].update(compile_time_s=1.0))
    assert any("schema_version 2 predates logged sittings" in p for p in verify.verify(folder))


def test_the_probe_and_the_code_that_times_a_seed_are_hashed_sources():
    files = provenance.sources(())
    for f in ("speedrun/training/environment.py", "speedrun/training/seed.py",
              "speedrun/training/train.py"):
        assert f in files


# --- submit -------------------------------------------------------------------------------------


SUBMIT = ["submit", "--track", "tiny", "--tricks", "softcap", "--steps", "60", "--seeds", "3",
          "--quiet"]


def reference_machine(mp, first):
    """This machine, as the first record found it, is the tiny track's reference machine."""
    probe = sittings.probe([record.load_record(first)])
    mp.setitem(tracks.REFERENCE_SPEEDS, ("tiny", environment.describe()["hardware_class"]), probe)


@pytest.fixture(scope="module")
def submitted(tmp_path_factory):
    """One real `submit` on the tiny track, run once for the module: its #1 (60 steps, 3 seeds)
    is trained first. The records folder, what the command printed, and the interleaved results
    it timed (the tests of what happens after training reuse them)."""
    root = tmp_path_factory.mktemp("submitted")
    got = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(tracks.TRACKS, "tiny", TINY)
        write_dataset(root / "data")
        mp.setenv("SPEEDRUN_DATA_DIR", str(root / "data"))
        mp.setenv("SPEEDRUN_NO_COMPILATION_CACHE", "1")
        assert run_cli(root, "--steps", "60", "--seeds", "3", "--name", "first") == 0
        reference_machine(mp, *record_dirs(root))
        real = interleave.interleave
        mp.setattr(interleave, "interleave", lambda *a: got.append(real(*a)) or got[-1])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli.main([*SUBMIT, "--records-dir", str(root / "records")])
    assert code == 0, out.getvalue()
    return root, out.getvalue(), got[0]


@pytest.mark.slow
def test_submit_times_a_claim_beside_the_number_one_in_one_sitting(submitted, monkeypatch):
    root, out, _ = submitted
    monkeypatch.setitem(tracks.TRACKS, "tiny", TINY)  # the records verify against their track
    assert re.search(r"time ratio B/A: [\d.]+x \(95% CI [\d.]+-[\d.]+\); (on the leaderboard's "
                     r"time scale B is [\d.]+ s \(95% interval [\d.]+-[\d.]+\)|B is not)", out), out
    folders = record_dirs(root)
    assert len(folders) == 3 and all(verify.verify(f) == [] for f in folders)
    assert all(p == [] for p in verify.verify_all(folders).values())
    recs = {f.name: record.load_record(f) for f in folders}
    first = next(f for f in folders if f.name.endswith("_first"))
    rerun = next(r for n, r in recs.items() if n.endswith("-rerun"))
    cand = next(r for r in recs.values() if r["description"] == "softcap")
    assert rerun["sitting"] == cand["sitting"] != recs[first.name]["sitting"]
    assert rerun["config_hash"] == recs[first.name]["config_hash"]
    assert "reference" not in cand and "rerun_of" not in rerun
    assert "sources" in cand["environment"] and "packages" in cand["environment"]


@pytest.mark.parametrize("against, message, at_once", [
    ("records/tiny/nothing-here", "no such record", True),
    ("other-track", "on track wiki-bytes", True),
    ("other-machine", "was made on 8xH100, this machine is cpu-2core", True),
    ("not-a-claim", "its configuration is not ranked (not a claim", False),
    ("not-a-claim --set optim.lr=-1", "optim.lr must be", True),
])
def test_submit_refuses_a_bad_reference_before_training(tiny, capsys, monkeypatch, against,
                                                        message, at_once):
    """What the named record or the settings alone show is said at once, before every record is
    verified for the ranking (seconds on the committed records)."""
    monkeypatch.setattr(interleave, "interleave", lambda *a: pytest.fail("trained anyway"))
    if at_once:
        monkeypatch.setattr(time_reference.leaderboard, "load_all",
                            lambda *a: pytest.fail("verified every record first"))
    folders = {"not-a-claim": write(tiny, [result(0, 2.9)], name="not-a-claim")}
    for name, change in (("other-track", dict(track="wiki-bytes", target=1.85)),
                         ("other-machine", dict(hardware_class="8xH100"))):
        folders[name] = write(tiny, [result(s, v) for s, v in enumerate(CLAIM)], name=name)
        forge(folders[name], lambda r: r.update(change))
    name, *extra = against.split()
    target = str(folders.get(name, tiny / name))
    monkeypatch.setattr(environment, "describe", lambda: {"hardware_class": "cpu-2core"})
    assert cli.main(["submit", "--track", "unit", "--against", target, "--quiet",
                     "--records-dir", str(tiny / "records"), *extra]) == 1
    one_line_error(capsys, message)


@pytest.mark.slow
def test_submit_interrupted_while_writing_leaves_nothing_half_written(tiny, submitted,
                                                                      monkeypatch):
    """Ctrl-C between the two records' writes: neither is left, both results files are."""
    root, _, got = submitted
    first = next(f for f in record_dirs(root) if f.name.endswith("_first"))
    shutil.copytree(first, tiny / "records" / "tiny" / first.name)
    reference_machine(monkeypatch, first)
    before = record_dirs(tiny)
    monkeypatch.setattr(interleave, "interleave", lambda *a: got)  # trained by the fixture
    real, calls = saving.write_record, []

    def second_fails(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(saving, "write_record", second_fails)
    monkeypatch.chdir(tiny)
    assert cli.main([*SUBMIT, "--records-dir", str(tiny / "records")]) == 130
    assert record_dirs(tiny) == before
    saved = sorted((tiny / "records").glob("speedrun-results-*.json"))
    assert len(saved) == 2 and all(json.loads(f.read_text())["results"] for f in saved)


def test_a_failing_speed_probe_stops_the_run_in_one_line(tiny, capsys, monkeypatch):
    monkeypatch.setattr(environment, "matmul_peak", lambda *a, **k: float("nan"))
    assert run_cli(tiny, "--steps", "3") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the machine-speed probe measured nan") and err.count("\n") == 1
    assert record_dirs(tiny) == []


# --- provenance -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_stores_its_code_and_packages_and_says_when_they_moved(tiny, capsys):
    assert run_cli(tiny, "--steps", "4", "--set", "train.eval_every=4", "--tricks", "softcap") == 0
    (folder,) = record_dirs(tiny)
    env = record.load_record(folder)["environment"]
    assert "tricks/softcap.py" in env["sources"] and "speedrun/core/model.py" in env["sources"]
    assert env["packages"]["jax"] == env["jax_version"]
    assert provenance.drift(env) == []
    moved = {**env, "sources": {**env["sources"], "tricks/softcap.py": "0" * 64},
             "packages": {**env["packages"], "jax": "0.0.1"}}
    notes = " ".join(provenance.drift(moved))
    assert "tricks/softcap.py: changed since the record ran" in notes and "jax 0.0.1 ->" in notes
    # the record's own header carries the same sources, so an edit of the record fails verify
    forge(folder, lambda r: r["environment"]["sources"].update({"tricks/softcap.py": "0" * 64}))
    assert any("environment.sources" in p for p in verify.verify(folder))
