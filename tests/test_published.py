"""Published records and the tables generated from them: `bloodcls publish` writes what the run's results.json
says, refuses what does not belong, and `bloodcls tables` reads the records back into the pages; a page whose
generated table differs from the records fails (the drift test), on the repository's own pages too."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from bloodcls.analysis.published import load_footing, publish, publish_many
from bloodcls.analysis.published_pages import regenerate
from bloodcls.analysis.published_significance import footing_report
from bloodcls.analysis.published_tables import REACHES, SHORT, WITHIN, render, seeds_cell, verdict
from bloodcls.cli import main
from bloodcls.common.markdown import fill_blocks
from bloodcls.errors import UserError
from tests.helpers import REPO


def copy_run(run: Path, dest: Path, **changes) -> Path:
    """A copy of a finished run folder (no checkpoints) with results.json's top-level keys or dotted paths changed."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoints"))
    doc = json.loads((dest / "results.json").read_text())
    for key, value in changes.items():
        node, *path = key.split("__")
        target = doc
        for part in [node, *path][:-1]:
            target = target[part]
        target[[node, *path][-1]] = value
    (dest / "results.json").write_text(json.dumps(doc))
    return dest


def block(text: str, name: str) -> list[str]:
    """The lines of one generated table of a page."""
    return text.split(f"<!-- table:{name} begin -->")[1].split(f"<!-- table:{name} end -->")[0].splitlines()


def row_of(lines: list[str], first: str) -> list[str]:
    (row,) = [ln for ln in lines if ln.startswith(f"| {first} |")]
    return [c.strip() for c in row.strip("|").split("|")]


def test_a_published_run_reads_back_as_its_own_results(reference_run, tmp_path):
    run, results = reference_run
    footing = tmp_path / "results" / "mine"
    path, outcome = publish(run, footing)
    assert outcome == "written" and path == footing / f"{results['experiment']}_s{results['seed']}.json"

    record = json.loads(path.read_text())
    labels = results["test"]["labels"]
    assert record["test"]["predictions"] == results["test"]["predictions"]
    assert record["test_split"] == {"size": len(labels), "data_file": Path(results["data"]["path"]).name,
                                    "data_md5": results["data"]["md5"],
                                    "labels_sha256": hashlib.sha256(",".join(map(str, labels)).encode()).hexdigest()}
    assert json.loads((footing / "test-labels.json").read_text())["labels"] == labels
    spec = json.loads((footing / "footing.json").read_text())
    assert (spec["recipe"], spec["precision"], spec["device"]) == (results["recipe"], results["compute"]["precision"],
                                                                   results["compute"]["device"])

    # The tables read the record back into the run's own figures (computed here from results.json's history).
    history = results["history"]
    best = min(range(len(history)), key=lambda i: (history[i]["val/loss"], i)) + 1
    loaded = load_footing(footing)
    seeds = render("seeds", "mine", {"mine": loaded}, tmp_path / "page.md", tmp_path)
    assert row_of(seeds, results["experiment"])[:6] == [
        results["experiment"], str(results["seed"]), str(len(history)), str(best), f"{100 * results['test']['acc']:.2f}",
        f"{100 * results['test']['f1']:.2f}"]
    beyond = render("beyond", "mine", {"mine": loaded}, tmp_path / "page.md", tmp_path)
    assert row_of(beyond, results["experiment"])[5] == f"{100 * results['test']['acc']:.2f}"

    assert publish(run, footing) == (path, "unchanged")  # publishing again changes nothing
    (start,) = record["starts"]  # one start: what it trained with, beside device.threads (the last start's)
    assert {k: start[k] for k in ("threads", "precision", "channels_last")} == {
        k: results["compute"][k] for k in ("threads", "precision", "channels_last")}
    assert start["threads"] == record["device"]["threads"]


def test_a_resumed_runs_record_names_the_threads_of_each_start(reference_run, tmp_path):
    """A run continued on another thread count says so start by start; for starts recorded before status.json kept
    their compute, the threads come from the config Hydra saved for each start (.hydra/, then .hydra-resume-*)."""
    run = copy_run(reference_run[0], tmp_path / "run")
    status = json.loads((run / "status.json").read_text())
    status.pop("compute", None)  # as a run started before 2026-12-08 wrote it
    status["resumes"] = [{"at": "2026-12-08T01:00:00+00:00", "commit": "abc", "previous_status": "interrupted"},
                         {"at": "2026-12-08T02:00:00+00:00", "commit": "def", "previous_status": "running",
                          "compute": {"threads": 4, "precision": "32-true"}}]  # recorded: wins over the config
    (run / "status.json").write_text(json.dumps(status))
    for saved, threads in ((".hydra", 1), (".hydra-resume-2026-12-08_01-00-00", 2),
                           (".hydra-resume-2026-12-08_02-00-00", "auto")):
        (run / saved).mkdir()
        (run / saved / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "threads": threads}))
    path, _ = publish(run, tmp_path / "results" / "mine")
    starts = json.loads(path.read_text())["starts"]
    assert [(s["commit"], s.get("threads")) for s in starts[1:]] == [("abc", 2), ("def", 4)]
    assert starts[0]["at"] == status["started_at"] and starts[0]["threads"] == 1

    shutil.rmtree(run / ".hydra-resume-2026-12-08_01-00-00")  # folders and starts no longer pair up: no guessing
    path, _ = publish(run, tmp_path / "results" / "other")
    assert [s.get("threads") for s in json.loads(path.read_text())["starts"]] == [None, None, 4]


def test_the_record_keeps_the_per_epoch_history_and_the_epochs_table_reads_it(reference_run, tmp_path):
    """The curve outlives the run folder: the record's history is results.json's, epoch counted from 1, and the
    epochs table sets two footings' runs side by side with each kept epoch in bold."""
    run, results = reference_run
    for name in ("old", "new"):
        publish(run, tmp_path / "results" / name)
    footings = {name: load_footing(tmp_path / "results" / name) for name in ("old", "new")}
    (record,) = footings["new"].records
    epochs = record.epochs()
    assert [e["epoch"] for e in epochs] == [h["epoch"] + 1 for h in results["history"]]
    assert [e["val_loss"] for e in epochs] == pytest.approx([h["val/loss"] for h in results["history"]], abs=1e-6)
    assert [e["train_acc"] for e in epochs] == pytest.approx([h["train/acc"] for h in results["history"]], abs=1e-6)
    name = f"old+new.{results['experiment']}_s{results['seed']}"
    lines = render("epochs", name, footings, tmp_path / "page.md", tmp_path)
    best = record.best_epoch
    kept = row_of(lines, str(best))
    h = results["history"][best - 1]
    assert kept[2] == kept[5] == f"**{h['val/loss']:.4f} / {100 * h['val/acc']:.2f}**"
    assert kept[1] == f"{h['train/loss']:.4f}" and len([ln for ln in lines if ln.startswith("| ")]) == len(epochs) + 1
    with pytest.raises(UserError, match="needs a published record of .* seed 9"):
        render("epochs", f"old+new.{results['experiment']}_s9", footings, tmp_path / "page.md", tmp_path)
    for name in ("old", "new"):
        (tmp_path / "results" / name / "training.json").write_text(json.dumps(
            {"sweep": [{"experiment": results["experiment"], "seed": 9}]}))
        footings[name] = load_footing(tmp_path / "results" / name)
    (line,) = render("epochs", f"old+new.{results['experiment']}_s9", footings, tmp_path / "page.md", tmp_path)
    assert "seed 9 is still training on `old`, `new`" in line  # runs in progress: a placeholder, not an error


def test_the_pairs_table_sets_two_recipes_side_by_side_seed_by_seed(reference_run, tmp_path):
    """Two footings trained on the same seeds: each footing's mean ± std and per-seed figures, and B − A per seed
    on the seeds both have (the validation-statistics page's test table)."""
    run, results = reference_run
    exp, acc = results["experiment"], 100 * results["test"]["acc"]
    for seed, delta in ((0, 0.0), (1, 0.02)):  # footing "old": seeds 0 and 1; "new": seed 0 (+0.01) and 1 (-0.01)
        publish(copy_run(run, tmp_path / f"old{seed}", seed=seed, test__acc=results["test"]["acc"] - delta),
                tmp_path / "results" / "old")
        publish(copy_run(run, tmp_path / f"new{seed}", seed=seed, test__acc=results["test"]["acc"] - delta + 0.0001
                         * (1 if seed == 0 else -1)), tmp_path / "results" / "new")
    footings = {name: load_footing(tmp_path / "results" / name) for name in ("old", "new")}
    lines = render("pairs", "old+new", footings, tmp_path / "page.md", tmp_path)
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.startswith(f"| {exp} |")]
    assert [r[1] for r in rows] == [f"`{results['recipe']}`"] * 2
    assert rows[0][3] == f"{acc - 1:.2f} ± {1.4142:.2f}" and rows[0][4] == f"0: {acc:.2f} / 1: {acc - 2:.2f}"
    assert rows[1][4] == f"0: {acc + 0.01:.2f} / 1: {acc - 2.01:.2f}"
    assert f"`{exp}` +0.01 / -0.01 (seeds 0, 1)" in lines[-1]
    with pytest.raises(UserError, match="pairs:<A>\\+<B>"):
        render("pairs", "old", footings, tmp_path / "page.md", tmp_path)


def test_a_run_that_has_not_completed_is_refused(reference_run, tmp_path, capsys):
    stopped = copy_run(reference_run[0], tmp_path / "stopped")
    (stopped / "results.json").unlink()  # a run stopped before its test writes no results.json
    (stopped / "status.json").write_text(json.dumps({"status": "interrupted"}))
    with pytest.raises(SystemExit) as exit_info:
        main(["publish", str(stopped), str(tmp_path / "results" / "f")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "has not completed (its state: interrupted)" in err and "resume=" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


# fp64: never what precision=auto picks (the reference run trains in bf16 where the processor has it, else fp32)
@pytest.mark.parametrize(("change", "named"), [({"compute__precision": "64-true"}, "precision '64-true'"),
                                               ({"recipe": "strong"}, "recipe 'strong'"),
                                               ({"compute__device": "gpu"}, "device 'gpu'")])
def test_a_run_of_another_footing_is_refused(reference_run, tmp_path, change, named):
    footing = tmp_path / "results" / "f"
    publish(reference_run[0], footing)
    other = copy_run(reference_run[0], tmp_path / "other", seed=7, **change)
    with pytest.raises(UserError, match="does not belong to the footing") as info:
        publish(other, footing)
    assert named in str(info.value) and not (footing / f"{reference_run[1]['experiment']}_s7.json").exists()


def test_another_test_split_and_a_changed_record_are_refused(reference_run, tmp_path):
    footing = tmp_path / "results" / "f"
    path, _ = publish(reference_run[0], footing)
    labels = list(reference_run[1]["test"]["labels"])
    shifted = copy_run(reference_run[0], tmp_path / "split", seed=8, test__labels=labels[1:] + labels[:1])
    with pytest.raises(UserError, match="is not the footing's"):
        publish(shifted, footing)
    changed = copy_run(reference_run[0], tmp_path / "changed", test__acc=0.123)
    with pytest.raises(UserError, match="exists with different content.*--force"):
        publish(changed, footing)
    assert publish(changed, footing, force=True) == (path, "replaced")
    assert json.loads(path.read_text())["test"]["acc"] == 0.123


def test_a_sweep_folder_publishes_its_completed_runs_and_skips_the_rest(reference_run, tmp_path):
    runs = tmp_path / "sweep" / "runs"
    copy_run(reference_run[0], runs / "0_a", seed=0)
    stopped = copy_run(reference_run[0], runs / "1_b", seed=1, status="running")
    (stopped / "status.json").write_text(json.dumps({"status": "running"}))
    out = publish_many(tmp_path / "sweep", tmp_path / "results" / "f")
    assert [o for _, o in out] == ["written", "skipped: running"]


def test_a_run_that_has_started_reads_training_until_it_is_published(reference_run, tmp_path):
    """training.json names the sweep's started runs; the tables say "training" for them, and once the run is
    published (or the sweep has nothing running) the note goes."""
    runs, footing = tmp_path / "sweep" / "runs", tmp_path / "results" / "f"
    experiment = json.loads((reference_run[0] / "results.json").read_text())["experiment"]
    copy_run(reference_run[0], runs / "0_a", seed=0)
    started = copy_run(reference_run[0], runs / "1_b", seed=1, status="running")
    (started / "status.json").write_text(json.dumps({"status": "running", "experiment": experiment}))
    publish_many(tmp_path / "sweep", footing)
    assert json.loads((footing / "training.json").read_text()) == {"sweep": [{"experiment": experiment, "seed": 1}]}
    loaded = load_footing(footing)
    assert loaded.training == {experiment: [1]}
    assert "| 1 | training |" in "\n".join(render("seeds", "f", {"f": loaded}, tmp_path / "p.md", tmp_path))
    (started / "status.json").unlink()
    copy_run(reference_run[0], runs / "2_b", seed=1)  # the run finished (here: a completed copy of it)
    shutil.rmtree(started)
    publish_many(tmp_path / "sweep", footing)
    assert not (footing / "training.json").exists() and load_footing(footing).training == {}


@pytest.mark.parametrize(("mean", "std", "study_acc", "expected"), [
    (96.78, 0.10, 96.78, REACHES),  # equal to the study's figure
    (96.7849, 0.0, 96.78, REACHES),  # printed as 96.78
    (96.50, 0.50, 96.78, WITHIN),  # 0.28 below, std 0.50
    (95.00, 0.28, 95.28, WITHIN),  # exactly one std below
    (96.50, 0.27, 96.78, SHORT),  # 0.28 below, std 0.27
    (93.38, 0.73, 95.88, SHORT),
])
def test_the_verdict_rule(mean, std, study_acc, expected):
    assert verdict(mean, std, study_acc) == expected


def test_a_row_still_running_says_which_seeds_are_in():
    class R:
        def __init__(self, seed):
            self.seed = seed

    assert seeds_cell([R(0), R(2)], [0, 1, 2]) == "0, 2 in; 1 pending"
    assert seeds_cell([], [0, 1, 2]) == "pending: 0, 1, 2"
    assert seeds_cell([R(0), R(1), R(2)], [0, 1, 2]) == "0, 1, 2"
    assert seeds_cell([], [0, 1, 2], [0]) == "0 training; 1, 2 pending"
    assert seeds_cell([R(0)], [0, 1, 2], [1, 2]) == "0 in; 1, 2 training"


def test_the_repositorys_tables_are_what_the_records_give():
    """The drift test on the real pages: README.md and docs/ hold exactly what `bloodcls tables` writes."""
    pages = regenerate(REPO, write=False)
    assert REPO / "README.md" in [p.path for p in pages]
    assert [p.diff(REPO) for p in pages if p.changed] == []


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """The repository's pages and records, copied: a place to edit them."""
    for name in ("README.md", "docs", "results"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    return tmp_path


def test_a_hand_edited_figure_fails_the_drift_check(repo_copy, capsys):
    readme = repo_copy / "README.md"
    row = next(ln for ln in block(readme.read_text(), "study:study-fp32-cpu") if ln.startswith("| skip | 128 |"))
    assert "| 96.78 |" in row  # the study's figure, from bloodcls.models.study
    readme.write_text(readme.read_text().replace(row, row.replace("| 96.78 |", "| 96.87 |")))
    assert main(["tables", "--check", "--root", str(repo_copy)]) == 1
    out = capsys.readouterr().out
    assert f"-{row.replace('| 96.78 |', '| 96.87 |')}" in out and f"+{row}" in out
    assert main(["tables", "--root", str(repo_copy)]) == 0  # rewritten from the records
    assert row in readme.read_text() and main(["tables", "--check", "--root", str(repo_copy)]) == 0


def test_published_runs_fill_the_study_table_with_mean_std_and_verdict(reference_run, repo_copy, tmp_path):
    """Three constructed skip runs on the study footing: 97.00, 96.50, 96.00 -> 96.50 ± 0.50, 0.28 below the
    study's 96.78: within its spread; one more record makes the README differ until the tables are rewritten."""
    footing = repo_copy / "results" / "study-fp32-cpu"
    for published in footing.glob("*.json"):  # the real records (a 3,421-image test split): only footing.json stays
        if published.name != "footing.json":
            published.unlink()
    (repo_copy / "docs" / "results" / "validation-statistics.md").unlink()  # its epochs table reads those records
    base = {"experiment": "skip", "img_size": 128, "recipe": "study", "compute__precision": "32-true",
            "compute__device": "cpu"}
    for seed, acc in ((0, 0.97), (1, 0.965), (2, 0.96)):
        publish(copy_run(reference_run[0], tmp_path / f"skip{seed}", seed=seed, test__acc=acc, **base), footing)
    assert main(["tables", "--check", "--root", str(repo_copy)]) == 1
    assert main(["tables", "--root", str(repo_copy)]) == 0
    cells = row_of(block((repo_copy / "README.md").read_text(), "study:study-fp32-cpu"), "skip")
    assert cells[2:5] == ["**96.50 ± 0.50**", "97.00 / 96.50 / 96.00", "0, 1, 2"]
    assert cells[6:] == ["96.78", WITHIN]
    assert "3 of the 21 runs published" in (repo_copy / "README.md").read_text()


def test_significance_reads_the_published_predictions(reference_run, tmp_path):
    """Two constructed experiments on one footing: A right on every image, B wrong on the first 5 -> McNemar
    counts 5 against 0, paired by seed."""
    labels = list(reference_run[1]["test"]["labels"])
    wrong = [(y + 1) % 8 for y in labels[:5]] + labels[5:]
    footing = tmp_path / "results" / "f"
    publish(copy_run(reference_run[0], tmp_path / "a", experiment="a", test__acc=1.0, test__predictions=labels), footing)
    publish(copy_run(reference_run[0], tmp_path / "b", experiment="b", test__acc=1 - 5 / len(labels),
                     test__predictions=wrong), footing)
    sig = footing_report(footing).significance
    assert (sig["best"], sig["runner_up"]) == ("a", "b")
    assert (sig["mcnemar"]["a_only"], sig["mcnemar"]["b_only"]) == (5, 0)


def test_markers_in_code_are_text_and_an_open_marker_is_named(tmp_path):
    text = ("```\n<!-- table:study:x begin -->\nexample\n<!-- table:study:x end -->\n```\n"
            "<!-- table:seeds:y begin -->\nold\n<!-- table:seeds:y end -->\n")
    filled = fill_blocks(text, lambda name: [f"new {name}"])
    assert "example" in filled and "new seeds:y" in filled and "old" not in filled and "new study:x" not in filled
    (tmp_path / "results").mkdir()
    (tmp_path / "README.md").write_text("<!-- table:study:x begin -->\nno end\n")
    with pytest.raises(UserError, match="never closes"):
        regenerate(tmp_path, write=False)
