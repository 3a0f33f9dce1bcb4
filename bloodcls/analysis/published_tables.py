"""The tables of training runs, generated from the published records in ``results/`` (never typed by hand).

The kinds, each named by a marker in the Markdown (:mod:`bloodcls.analysis.published_pages`):

- ``study:<footing>``: the study's seven experiments on one footing, mean ± sample std over seeds, the study's
  figure beside each and a verdict (:func:`verdict`, the one home of the rule; :data:`VERDICT_RULE` says it);
- ``beyond:<footing>``: every other published row (other footings, other experiments), one row per footing
  and experiment;
- ``seeds:<footing>``: the per-seed detail of one footing (epochs trained, best epoch, test accuracy, commit,
  date), the seeds still to come included;
- ``footing:<footing>``: what footing.json states (recipe, precision, device, plan, the exact sweep command), so a
  page quotes the command from its one home;
- ``epochs:<A>+<B>.<experiment>_s<seed>``: one run's per-epoch curve on two footings side by side;
- ``pairs:<A>+<B>``: the experiments both footings publish, each footing's test accuracy over its seeds and the
  difference seed by seed (two recipes on the same seeds: docs/results/validation-statistics.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from bloodcls.analysis.published import Footing, precision_label
from bloodcls.common.markdown import md_table, number
from bloodcls.common.records import PublishedRecord
from bloodcls.common.stats import mean_std, plus_minus
from bloodcls.errors import UserError
from bloodcls.models import study

REACHES, WITHIN, SHORT = "reaches the study", "within its spread", "falls short"
VERDICT_RULE = ("Verdict, figures compared as printed (two decimals): **reaches the study** when the mean is at or "
                "above the study's figure, **within its spread** when it is below by at most one sample standard "
                "deviation over the seeds, **falls short** when it is below by more. A row gets its verdict when "
                "all of the footing's seeds are in; until then it says which seeds are in, which are training and "
                "which are pending.")
STD_TARGET = 1.0  # issue 39: a sample std of at most one point on at least five of the seven rows


def verdict(mean: float, std: float, study_acc: float) -> str:
    """Where a row stands against the study's single run, on the figures as the table prints them."""
    mean, std, gap = round(mean, 2), round(std, 2), round(study_acc - round(mean, 2), 2)
    if mean >= study_acc:
        return REACHES
    return WITHIN if gap <= std else SHORT


def accuracies(records: list[PublishedRecord]) -> list[float]:
    return [r.acc for r in records if r.acc is not None]


def seeds_cell(records: list[PublishedRecord], planned: list[int], training: list[int] | None = None) -> str:
    """"0, 1, 2" once every planned seed is in; else which are in, which are training (started, not finished:
    training.json) and which are pending (queued)."""
    have = [r.seed for r in records]
    missing = [s for s in planned if s not in have]
    if not missing:
        return ", ".join(map(str, have))
    running = [s for s in missing if s in (training or [])]
    queued = [s for s in missing if s not in running]
    parts = ([f"{', '.join(map(str, have))} in"] if have else []) + \
        ([f"{', '.join(map(str, running))} training"] if running else [])
    if not parts:
        return f"pending: {', '.join(map(str, queued))}"
    return "; ".join(parts + ([f"{', '.join(map(str, queued))} pending"] if queued else []))


def acc_cell(records: list[PublishedRecord], bold: bool = False) -> str:
    accs = accuracies(records)
    if not accs:
        return "pending"
    text = f"{accs[0]:.2f}" if len(accs) == 1 else plus_minus(*mean_std(accs))
    return f"**{text}**" if bold else text


def device_cell(footing: Footing, records: list[PublishedRecord]) -> str:
    """The processors (CPU) or GPUs the records ran on, else the footing's kind of device."""
    kind = str(footing.spec.get("device", "")).upper()
    names = sorted({str(r.device.get("processor") or r.device.get("name")) for r in records if r.device})
    if kind == "CPU":
        names = [f"CPU ({n})" if not n.startswith("CPU") else n for n in names]
    return ", ".join(names) or kind or "–"


def link(footing: Footing, md_path: Path, root: Path) -> str:
    """A link from ``md_path`` to the footing's page (footing.json's ``page``, relative to the repository)."""
    page = footing.spec.get("page")
    if not page:
        return "–"
    rel = os.path.relpath(root / page, md_path.parent)
    return f"[{footing.name}]({Path(rel).as_posix()})"


def study_table(footing: Footing, md_path: Path, root: Path) -> list[str]:
    """The study's seven rows on one footing, each beside the study's figure, with its verdict."""
    rows, complete = [], []
    for exp in study.EXPERIMENTS:
        records, ref = footing.of(exp), study.PERFORMANCE[exp]["acc"]
        accs = accuracies(records)
        done = bool(accs) and all(s in [r.seed for r in records] for s in footing.seeds)
        mean, std = mean_std(accs) if accs else (None, None)
        if done:
            complete.append(std)
        per_seed = " / ".join(f"{a:.2f}" for a in accs) or "–"
        rows.append([exp, str(study.COUNTS[exp]["img_size"]), acc_cell(records, bold=True), per_seed,
                     seeds_cell(records, footing.seeds, footing.training.get(exp)), device_cell(footing, records),
                     number(ref),
                     verdict(mean, std, ref) if done else "pending"])
    header = ["experiment", "input (px)", "test acc (%)", "per seed", "seeds", "device", "study", "verdict"]
    published = len(footing.records)
    started = sum(len(footing.training.get(exp, [])) for exp in study.EXPERIMENTS)
    training = f", {started} training" if started else ""
    planned = len(study.EXPERIMENTS) * len(footing.seeds)
    spread = (f" Rows with a sample std ≤ {STD_TARGET:.1f}: {sum(round(s, 2) <= STD_TARGET for s in complete)} "
              f"of the {len(complete)} complete." if complete else "")
    return [*md_table(header, rows), "",
            f"Footing `{footing.name}`: recipe `{footing.spec.get('recipe')}`, "
            f"{precision_label(footing.spec.get('precision'))}, {str(footing.spec.get('device')).upper()}; "
            f"{published} of the {planned} runs published{training}.{spread} Per seed: {link(footing, md_path, root)}.",
            "", VERDICT_RULE]


def beyond_table(footings: dict[str, Footing], study_footing: str, md_path: Path, root: Path) -> list[str]:
    """One row per footing and experiment, except the study's seven rows on ``study_footing``."""
    rows = []
    for name, footing in sorted(footings.items()):
        for exp in footing.experiments:
            if name == study_footing and exp in study.EXPERIMENTS:
                continue
            records = footing.of(exp)
            ref = study.PERFORMANCE.get(exp, {}).get("acc")
            tta = [100 * r.test_tta["acc"] for r in records if r.test_tta and r.test_tta.get("acc") is not None]
            size = next((r.img_size for r in records if r.img_size), None) or study.COUNTS.get(exp, {}).get("img_size")
            rows.append([exp, number(size, 0), f"`{footing.spec.get('recipe')}`",
                         precision_label(footing.spec.get("precision")), device_cell(footing, records),
                         acc_cell(records), plus_minus(*mean_std(tta)) if tta else "–",
                         seeds_cell(records, footing.seeds, footing.training.get(exp)), number(ref),
                         link(footing, md_path, root)])
    if not rows:
        return ["No run beyond the study's seven rows is published yet."]
    return md_table(["experiment", "input (px)", "recipe", "precision", "device", "test acc (%)", "TTA x8 (%)",
                     "seeds", "study", "page"], rows)


def short_commit(commit: str | None) -> str:
    """``272a52c26cae-dirty`` -> ``272a52c-dirty``: seven digits, and whether the checkout had local changes."""
    text = str(commit or "–")
    return text[:7] + ("-dirty" if text.endswith("-dirty") else "")


def _commit(record: PublishedRecord) -> str:
    started, ended = (short_commit(record.commit.get(k)) for k in ("started", "ended"))
    return f"`{started}`" if started == ended else f"`{started}`, ended at `{ended}`"


def seeds_table(footing: Footing) -> list[str]:
    """Every planned (experiment, seed) of the footing, and any other published or training, with its figures."""
    rows = []
    for exp in footing.experiments:
        have = {r.seed: r for r in footing.of(exp)}
        for seed in sorted(set(footing.seeds) | set(have) | set(footing.training.get(exp, []))):
            r = have.get(seed)
            if r is None:
                state = "training" if seed in footing.training.get(exp, []) else "pending"
                rows.append([exp, str(seed), state, "–", "–", "–", "–", "–"])
                continue
            f1 = r.test.get("f1")
            finished = (r.finished or "–").replace("T", " ")[:16]
            rows.append([exp, str(seed), str(r.epochs_trained), str(r.best_epoch), number(r.acc),
                         number(None if f1 is None else 100 * f1), _commit(r), finished])
    return [*md_table(["experiment", "seed", "epochs trained", "best epoch (from 1)", "test acc (%)",
                       "macro F1 (×100)", "commit", "finished (UTC)"], rows), "",
            "Generated from the records in `results/" + footing.name + "/` by `bloodcls tables`; a row says "
            "training while its run has started and not finished, pending while it is queued, until its run is "
            "published."]


def footing_lines(footing: Footing) -> list[str]:
    """footing.json as a page states it: recipe, precision, device, plan, start, and the sweep command."""
    spec = footing.spec
    lines = [f"Recipe `{spec.get('recipe')}`, {precision_label(spec.get('precision'))} (`trainer.precision="
             f"{spec.get('precision')}`), {str(spec.get('device')).upper()}; experiments "
             f"{', '.join(f'`{e}`' for e in spec.get('experiments') or [])}; seeds {', '.join(map(str, footing.seeds))}."]
    if spec.get("started"):
        lines.append(f"Started {spec['started']}.")
    if spec.get("sweep"):
        lines += ["", "```bash", str(spec["sweep"]), "```"]
    return lines


def epochs_table(name: str, footings: dict[str, Footing], md_path: Path) -> list[str]:
    """``epochs:<footing>+<footing>.<experiment>_s<seed>``: one run's per-epoch curve on each footing side by side
    (the records' histories), the epoch each run kept in bold: how validation read the same training."""
    names, _, run = name.rpartition(".")
    experiment, _, seed = run.rpartition("_s")
    records, training = [], []
    for footing in names.split("+"):
        found = [r for r in (footings[footing].of(experiment) if footing in footings else []) if str(r.seed) == seed]
        if not found and footing in footings and seed.isdigit() and \
                int(seed) in footings[footing].training.get(experiment, []):
            training.append(footing)
            continue
        if not found or not found[0].epochs():
            raise UserError(f"{md_path}: the table epochs:{name} needs a published record of {experiment} seed {seed} "
                            f"with its per-epoch history in results/{footing}/ (records keep it since this table "
                            f"exists; republish an older run with `bloodcls publish <run> results/{footing} --force`).")
        records.append((footing, found[0]))
    if training:
        return [f"`{experiment}` seed {seed} is still training on {', '.join(f'`{f}`' for f in training)}: its "
                "per-epoch curves appear here, generated from the records, once every run of this table is published."]
    header, rows = ["epoch"], []
    for footing, _ in records:
        header += [f"{footing}: train loss", "val loss / acc (%)", "lr"]
    curves = [(r, {e.get("epoch"): e for e in r.epochs()}) for _, r in records]  # each record's epochs, read once
    for epoch in range(1, max(len(by_epoch) for _, by_epoch in curves) + 1):
        row = [str(epoch)]
        for r, by_epoch in curves:
            e = by_epoch.get(epoch)
            if e is None:
                row += ["–", "stopped" if epoch > (r.epochs_trained or 0) else "–", "–"]
                continue
            acc = e.get("val_acc")
            val = f"{number(e.get('val_loss'), 4)} / {number(None if acc is None else 100 * acc)}"
            row += [number(e.get("train_loss"), 4), f"**{val}**" if epoch == r.best_epoch else val,
                    f"{e['lr']:.2e}" if e.get("lr") is not None else "–"]
        rows.append(row)
    return [*md_table(header, rows), "", "From the records' per-epoch histories (`bloodcls tables`); in bold, the "
            "epoch each run kept (best validation loss on its own validation)."]


def pairs_table(name: str, footings: dict[str, Footing], md_path: Path) -> list[str]:
    """``pairs:<A>+<B>``: for each experiment published on both footings, one row per footing (test accuracy over
    its seeds, per seed) and B − A on the seeds both have, so two recipes trained on the same seeds compare at a glance."""
    names = name.split("+")
    missing = [n for n in names if n not in footings]
    if len(names) != 2 or missing:
        raise UserError(f"{md_path}: the table pairs:{name} names two footings of results/ as pairs:<A>+<B> "
                        f"(missing: {', '.join(missing) or 'a second footing'}; there: {', '.join(sorted(footings))}).")
    first, second = (footings[n] for n in names)
    both = [e for e in first.experiments if e in second.experiments and first.of(e) and second.of(e)]
    rows, diffs = [], []
    order = list(study.EXPERIMENTS)  # the study's rows in its order, then any other experiment by name
    for exp in sorted(both, key=lambda e: (order.index(e) if e in order else len(order), e)):
        accs = []  # seed -> test accuracy, per footing
        for footing in (first, second):
            records = sorted(footing.of(exp), key=lambda r: r.seed)
            accs.append({r.seed: r.acc for r in records if r.acc is not None})
            rows.append([exp, f"`{footing.spec.get('recipe')}`", seeds_cell(records, footing.seeds,
                                                                               footing.training.get(exp)),
                         acc_cell(records), " / ".join(f"{seed}: {acc:.2f}" for seed, acc in accs[-1].items())])
        a, b = accs
        shared = sorted(set(a) & set(b))
        if shared:
            diffs.append(f"`{exp}` " + " / ".join(f"{b[s] - a[s]:+.2f}" for s in shared)
                         + f" (seed{'s' if len(shared) > 1 else ''} {', '.join(map(str, shared))})")
    if not rows:
        return [f"No experiment is published on both `{names[0]}` and `{names[1]}` yet."]
    return [*md_table(["experiment", "recipe", "seeds", "test acc (%), kept checkpoint", "per seed"], rows), "",
            f"`{second.spec.get('recipe')}` − `{first.spec.get('recipe')}`, test accuracy seed by seed: "
            + "; ".join(diffs) + ". Generated from `results/` by `bloodcls tables`."]


def render(kind: str, footing_name: str, footings: dict[str, Footing], md_path: Path, root: Path) -> list[str]:
    """The lines of the table a marker names (``<kind>:<footing>``; ``epochs:<A>+<B>.<run>``; ``pairs:<A>+<B>``)."""
    if kind == "epochs":
        return epochs_table(footing_name, footings, md_path)
    if kind == "pairs":
        return pairs_table(footing_name, footings, md_path)
    if footing_name not in footings:
        raise UserError(f"{md_path}: the marker table:{kind}:{footing_name} names a footing that {root / 'results'} "
                        f"does not hold (there: {', '.join(sorted(footings)) or 'none'}). Fix the marker, or create "
                        f"results/{footing_name}/footing.json (`bloodcls publish <run> results/{footing_name}`).")
    footing = footings[footing_name]
    if kind == "study":
        return study_table(footing, md_path, root)
    if kind == "beyond":
        return beyond_table(footings, footing_name, md_path, root)
    if kind == "seeds":
        return seeds_table(footing)
    if kind == "footing":
        return footing_lines(footing)
    raise UserError(f"{md_path}: table:{kind}:{footing_name} is no kind of generated table; the kinds are study, "
                    "beyond, seeds and footing (table:<kind>:<footing>), epochs (table:epochs:<A>+<B>.<run>) and pairs "
                    "(table:pairs:<A>+<B>).")
