"""Records that travel: the logs vouch for every field a record states, one run cannot count
twice, a claim made on a slower machine ranks on its track's one time scale only through a
same-sitting reference, and `submit` makes that reference end to end."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil

import pytest
import yaml

from helpers import (ENV, TINY, one_line_error, record_dirs, result, run_cli, write,
                     write_dataset)
from speedrun import cli, tracks
from speedrun.config import RunConfig, config_hash
from speedrun.records import leaderboard, provenance, record, references, stats, verify
from speedrun.training import environment, interleave, saving, time_reference

CLAIM = (2.90, 2.91, 2.92)


def claim(tmp_path, trick_names=(), times=(10.0, 10.5, 11.0), probe=400.0, **kw):
    runs = [result(s, v, t, probe=probe) for s, (v, t) in enumerate(zip(CLAIM, times))]
    return write(tmp_path, runs, trick_names, env={**ENV, "date": kw.pop("date", ENV["date"])}, **kw)


def forge(folder, change):
    """Edit a record and recompute every hash with the project's own functions, leaving its
    logs untouched: what `verify` must still catch."""
    rec = record.load_record(folder)
    change(rec)
    cfg = RunConfig.from_dict(rec["config"])
    rec["config_hash"] = config_hash(cfg)
    rec["tricks"] = {k: dict(v) for k, v in cfg.tricks.items()}
    rec["description"] = " + ".join(cfg.trick_names) or "baseline"
    rec["summary"] = record.summary(rec["runs"], rec["target"], rec["data"])
    (folder / "record.yaml").write_text(yaml.safe_dump(record.sealed(rec), sort_keys=False))


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


# --- one time scale: references ---------------------------------------------------------------


@pytest.fixture
def reference_machine(monkeypatch):
    """The unit track's cpu-2core reference machine probes 400 GFLOP/s."""
    monkeypatch.setitem(tracks.REFERENCE_SPEEDS, ("unit", "cpu-2core"), 400.0)


def rerun_of(tmp_path, target, times, probe, date, name):
    """A same-sitting re-run of ``target``'s exact configuration."""
    runs = [result(s, v, t, probe=probe) for s, (v, t) in enumerate(zip(CLAIM, times))]
    cfg = RunConfig.from_dict(record.load_record(target)["config"])
    return write(tmp_path, runs, cfg=cfg, env={**ENV, "date": date}, name=name,
                 rerun_of=references.record_id(target))


def linked(tmp_path, trick_names, times, probe, date, reference, rerun, name):
    """A candidate record linked to its same-sitting re-run of ``reference``."""
    folder = claim(tmp_path, trick_names, times, probe=probe, date=date, name=name)
    rerun_rec = record.load_record(rerun)

    def link(rec):
        rec["reference"] = references.link(rec, references.record_id(reference),
                                           references.record_id(rerun), rerun_rec)
    forge(folder, link)
    return folder


def standing(tmp_path, folder):
    df = leaderboard.load_all(tmp_path / "records")
    return df[df["id"] == references.record_id(folder)].iloc[0]


def test_a_claim_from_a_3x_slower_machine_ranks_only_through_a_same_sitting_reference(
        tmp_path, reference_machine):
    a = claim(tmp_path, times=(30.0, 31.0, 32.0), name="a")  # the #1, on the reference machine
    # the same softcap claim made on a machine ~3x slower (probe 133): times and probes scaled
    slow_times, slow_probe = (27.0 * 3, 27.5 * 3, 28.0 * 3), 400.0 / 3
    alone = claim(tmp_path, ["softcap"], slow_times, probe=slow_probe, name="alone",
                  date="2026-11-25T10:00:00+00:00")
    row = standing(tmp_path, alone)
    assert pd_isnan(row["ranked"]) and "another machine" in row["standing"]
    # with a same-sitting re-run of #1's configuration on that machine, it ranks scaled
    rerun = rerun_of(tmp_path, a, (31.0 * 3, 30.0 * 3, 32.0 * 3), slow_probe,
                     "2026-11-25T11:00:00+00:00", "a-rerun")
    cand = linked(tmp_path, ["softcap", "relu2"], slow_times, slow_probe,
                  "2026-11-25T11:05:00+00:00", a, rerun, "cand")
    assert verify.verify(rerun) == [] and verify.verify(cand) == []
    row = standing(tmp_path, cand)
    ratio = stats.time_ratio(list(slow_times), [93.0, 90.0, 96.0])[0]
    assert row["scaled"] and row["ranked"] == pytest.approx(round(ratio, 4) * 31.0, rel=1e-3)
    assert row["ranked"] < 40  # not its raw ~82 s
    text = leaderboard.render(tmp_path / "records", leaderboard.load_all(tmp_path / "records"))
    ranked = text.split("### ")[0]
    assert re.search(r"\| 1 +\| 2\d\.\d s \(scaled\) +\| 82\.5 ± 1\.5 s +\| 0\.8\d\dx #2", ranked)
    assert "a-rerun" not in ranked and "same-sitting re-run of" in text
    assert "another machine" in text.split("### Not ranked")[1]


def pd_isnan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def test_chains_resolve(tmp_path, reference_machine):
    a = claim(tmp_path, times=(30.0, 31.0, 32.0), name="a")
    ra = rerun_of(tmp_path, a, (60.0, 62.0, 64.0), 200.0, "2026-11-25T10:00:00+00:00", "a-rerun")
    b = linked(tmp_path, ["softcap"], (45.0, 46.0, 47.0), 200.0, "2026-11-25T10:05:00+00:00",
               a, ra, "b")
    rb = rerun_of(tmp_path, b, (90.0, 92.0, 94.0), 130.0, "2026-11-26T10:00:00+00:00", "b-rerun")
    c = linked(tmp_path, ["softcap", "relu2"], (72.0, 73.0, 74.0), 130.0,
               "2026-11-26T10:05:00+00:00", b, rb, "c")
    assert all(verify.verify(f) == [] for f in (a, ra, b, rb, c))
    rb_ratio = record.load_record(b)["reference"]["time_ratio"]
    rc_ratio = record.load_record(c)["reference"]["time_ratio"]
    assert standing(tmp_path, c)["ranked"] == pytest.approx(rc_ratio * rb_ratio * 31.0, rel=1e-3)


@pytest.mark.parametrize("breakage, message", [
    ("missing", "does not exist"),
    ("other track", "is on another track"),
    ("not a claim", "is not a claim"),
    ("cycle", "references run in a circle"),
    ("ratio", "is not the runs'"),
])
def test_a_broken_reference_fails_verify_naming_it(tmp_path, reference_machine, breakage,
                                                   message):
    a = claim(tmp_path, times=(30.0, 31.0, 32.0), name="a")
    ra = rerun_of(tmp_path, a, (60.0, 62.0, 64.0), 200.0, "2026-11-25T10:00:00+00:00", "a-rerun")
    b = linked(tmp_path, ["softcap"], (45.0, 46.0, 47.0), 200.0, "2026-11-25T10:05:00+00:00",
               a, ra, "b")
    if breakage == "missing":
        shutil.rmtree(a)
    elif breakage == "other track":
        forge(a, lambda r: r.update(track="wiki-bytes"))
    elif breakage == "not a claim":
        forge(a, lambda r: r["runs"].pop())
    elif breakage == "cycle":
        forge(a, lambda r: r.update(reference={**record.load_record(b)["reference"],
                                               "record": references.record_id(b)}))
    else:
        forge(b, lambda r: r["reference"].update(time_ratio=0.5))
    assert any(message in p for p in verify.verify(b)), verify.verify(b)


def test_a_rerun_must_repeat_its_reference_exactly(tmp_path, reference_machine):
    a = claim(tmp_path, times=(30.0, 31.0, 32.0), name="a")
    ra = rerun_of(tmp_path, a, (60.0, 62.0, 64.0), 200.0, "2026-11-25T10:00:00+00:00", "a-rerun")
    forge(ra, lambda r: r["config"]["optim"].update(lr=1e-3))
    assert any("is not that record's" in p for p in verify.verify(ra))


def test_one_entry_per_configuration(tmp_path):
    first = claim(tmp_path, times=(30.0, 31.0, 32.0), name="first")
    again = claim(tmp_path, times=(20.0, 21.0, 22.0), name="again", date="2026-11-25T10:00:00+00:00")
    df = leaderboard.load_all(tmp_path / "records")
    entries = df[df["entry"]]
    assert list(entries["id"]) == [references.record_id(first)]
    text = leaderboard.render(tmp_path / "records", df)
    assert f"the same configuration as [{first.name}]" in text
    assert again.name not in text.split("### ")[0]


# --- submit -------------------------------------------------------------------------------------


SUBMIT = ["submit", "--track", "tiny", "--tricks", "softcap", "--steps", "60", "--seeds", "3",
          "--quiet"]


@pytest.fixture(scope="module")
def submitted(tmp_path_factory):
    """One real `submit` on the tiny track, run once for the module: its #1 (60 steps, 3 seeds)
    is trained first. The records folder, what the command printed, and the interleaved results
    it timed (the tests of what happens after training reuse them)."""
    root = tmp_path_factory.mktemp("submitted")
    timed = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(tracks.TRACKS, "tiny", TINY)
        write_dataset(root / "data")
        mp.setenv("SPEEDRUN_DATA_DIR", str(root / "data"))
        mp.setenv("SPEEDRUN_NO_COMPILATION_CACHE", "1")
        assert run_cli(root, "--steps", "60", "--seeds", "3", "--name", "first") == 0
        real = interleave.interleave
        mp.setattr(interleave, "interleave", lambda *a: timed.append(real(*a)) or timed[-1])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli.main([*SUBMIT, "--records-dir", str(root / "records")])
    assert code == 0, out.getvalue()
    return root, out.getvalue(), timed[0]


@pytest.mark.slow
def test_submit_times_a_claim_against_the_number_one_and_links_both(submitted, monkeypatch):
    root, out, _ = submitted
    monkeypatch.setitem(tracks.TRACKS, "tiny", TINY)  # the records verify against their track
    assert re.search(r"time ratio B/A: [\d.]+x \(95% CI [\d.]+-[\d.]+\); on the leaderboard's "
                     r"time scale: [\d.]+ x [\d.]+ s = [\d.]+ s \(scaled\)", out), out
    folders = record_dirs(root)
    assert len(folders) == 3 and all(verify.verify(f) == [] for f in folders)
    recs = {f.name: record.load_record(f) for f in folders}
    first = next(f for f in folders if f.name.endswith("_first"))
    rerun = next(r for r in recs.values() if r.get("rerun_of"))
    cand = next(r for r in recs.values() if r.get("reference"))
    assert rerun["rerun_of"] == references.record_id(first)
    assert cand["reference"]["record"] == references.record_id(first)
    assert cand["description"] == "softcap" and rerun["config_hash"] == recs[first.name]["config_hash"]
    assert "sources" in cand["environment"] and "packages" in cand["environment"]
    df = leaderboard.load_all(root / "records")
    row = df[df["description"] == "softcap"].iloc[0]
    assert row["entry"] == cand["summary"]["claim"] and row["scaled"]
    assert not df[df["rerun_of"].notna()].iloc[0]["entry"]


@pytest.mark.parametrize("against, message, at_once", [
    ("records/tiny/nothing-here", "no such record", True),
    ("other-track", "on track wiki-bytes", True),
    ("other-machine", "was made on gpu-h100x8, this machine is cpu-2core", True),
    ("not-a-claim", "is not a claim", False),
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
                         ("other-machine", dict(hardware_class="gpu-h100x8"))):
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
    root, _, timed = submitted
    first = next(f for f in record_dirs(root) if f.name.endswith("_first"))
    shutil.copytree(first, tiny / "records" / "tiny" / first.name)
    before = record_dirs(tiny)
    monkeypatch.setattr(interleave, "interleave", lambda *a: timed)  # trained by the fixture
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
