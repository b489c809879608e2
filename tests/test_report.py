"""``regionaldiff report``: a sweep's runs from MLflow -> markdown, CSV, plots, paired claims; bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import TINY
from regionaldiff.commands.report import main
from regionaldiff.tracking.mlflow_run import JobTracker
from regionaldiff.tracking.report import (
    ReportError,
    ReportSpec,
    build_report,
    load_sweep,
    parse_overrides,
    wrap_title,
)


def _fake_sweep(tmp_path: Path, fail: int | None = None) -> tuple[str, str]:
    """A sweep of 2 arms x 3 seeds logged by hand (job ``fail`` FAILED, no metrics); returns (uri, parent id)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = str(tmp_path / "multiruns" / "s")
    num = 0
    parent = ""
    for seed in range(3):
        for arm, base in (("global_cls", 0.1), ("regional_predicted", 0.2)):
            tracker = JobTracker(True, uri, "exp", tmp_path / "art", f"#{num}", sweep_dir=sweep, system_metrics=False)
            tracker.set_tags({"regionaldiff.overrides": f"seed={seed} ablation={arm}"})
            tracker.client.log_param(tracker.run_id, "seed", str(seed))
            if num == fail:
                tracker.finish("FAILED")
            else:
                tracker.log_metrics({"eval/recon_region_miou": base + 0.01 * seed, "eval/ssim": 0.5 + 0.01 * seed})
                tracker.finish("FINISHED")
            parent = tracker.parent_run_id or ""
            num += 1
    return uri, parent


SPEC = ReportSpec.from_mapping(
    {
        "title": "Tiny",
        "variant_label": "arm",
        "metrics": {"eval/recon_region_miou": "region IoU", "eval/ssim": "SSIM"},
        "variant_titles": {"global_cls": "+ classification", "regional_predicted": "+ predicted maps"},
        "claims": [{"a": "regional_predicted", "b": "global_cls", "metric": "eval/recon_region_miou"}],
    }
)


def test_parse_overrides():
    assert parse_overrides("seed=0 ablation=global_mae +x.y=[1,2]") == {
        "seed": "0",
        "ablation": "global_mae",
        "x.y": "[1,2]",
    }
    assert parse_overrides("(none)") == {}


def test_report_groups_by_the_swept_keys_and_tests_the_claims(tmp_path):
    uri, parent = _fake_sweep(tmp_path)
    sweep = load_sweep(uri, sweep_dir=str(tmp_path / "multiruns" / "s"))
    assert sweep.parent_ids == [parent] and len(sweep.finished) == 6 and not sweep.unfinished
    report = build_report(sweep, SPEC, tmp_path / "out", "tiny")
    text = report.markdown
    assert "| arm | seeds | region IoU | SSIM |" in text
    assert "| + classification | 3 | 0.110 ± 0.010 | 0.510 ± 0.010 |" in text
    assert "| + predicted maps | 3 | 0.210 ± 0.010 |" in text
    assert "grouped by `ablation`" in text
    assert "+ predicted maps beats + classification on region IoU | 3 | +0.100 ± 0.000" in text
    assert [shown for _, shown in report.verdicts] == [True]
    rows = list(csv.DictReader((tmp_path / "out" / "tiny.csv").open()))
    assert [r["arm"] for r in rows] == ["global_cls", "regional_predicted"]
    assert float(rows[0]["eval/recon_region_miou:mean"]) == pytest.approx(0.11) and rows[0]["eval/ssim:n"] == "3"
    assert (tmp_path / "out" / "tiny.png").read_bytes()[:4] == b"\x89PNG"
    logged = {a.path for a in sweep.client.list_artifacts(parent, "report")}
    assert logged == {"report/tiny.md", "report/tiny.csv", "report/tiny.png"}


def test_a_claim_whose_variant_was_not_run_is_named_not_dropped(tmp_path):
    uri, _ = _fake_sweep(tmp_path)
    sweep = load_sweep(uri, sweep_dir=str(tmp_path / "multiruns" / "s"))
    spec = ReportSpec.from_mapping(
        {**SPEC.__dict__, "claims": [{"a": "ablation=regional_predicted", "b": "global_cls", "metric": "eval/ssim"}]}
    )
    report = build_report(sweep, spec, tmp_path / "out", "tiny", log_artifacts=False)
    assert report.verdicts == []
    assert (
        "Not tested, a variant not run: 'ablation=regional_predicted' vs 'global_cls' ('ablation=regional_predicted' "
        "not in this sweep). Variants in this sweep: 'global_cls', 'regional_predicted'." in report.markdown
    )


def test_report_lists_failed_children(tmp_path):
    uri, parent = _fake_sweep(tmp_path, fail=3)
    sweep = load_sweep(uri, run_ids=[parent])
    report = build_report(sweep, SPEC, tmp_path / "out", log_artifacts=False)
    assert (
        "## Jobs not in the table" in report.markdown
        and "| #3 | FAILED | `seed=1 ablation=regional_predicted` |" in report.markdown
    )
    assert "| + predicted maps | 2 |" in report.markdown


def test_bad_input_gives_a_clear_error(tmp_path, capsys):
    uri, parent = _fake_sweep(tmp_path)
    assert main(["--tracking-uri", uri, "--run-id", "0123456789abcdef", "--no-log"]) == 2
    assert "no MLflow run '0123456789abcdef'" in capsys.readouterr().err
    with pytest.raises(ReportError, match="no MLflow store"):
        load_sweep(f"sqlite:///{tmp_path / 'missing.db'}", experiment="exp")
    with pytest.raises(ReportError, match="no MLflow experiment 'nope'.*exp"):
        load_sweep(uri, experiment="nope")
    # an empty sweep: a parent run without children (or any run that is not a sweep's parent)
    lonely = JobTracker(True, uri, "exp", tmp_path / "art", "single", system_metrics=False)
    assert main(["--tracking-uri", uri, "--run-id", lonely.run_id, "--no-log"]) == 2
    assert "has no child runs" in capsys.readouterr().err
    # the latest sweep of the experiment, through the CLI's entry
    out = tmp_path / "cli"
    assert main(["--tracking-uri", uri, "--experiment", "exp", "--out", str(out), "--no-log"]) == 0
    assert (out / "report.md").is_file() and (out / "report.csv").is_file()


@pytest.mark.slow
def test_report_rebuilds_the_ablation_doc_from_a_tiny_real_sweep(run_cli, tmp_path):
    """The ablation experiment, 2 arms x 2 seeds at a tiny budget, then `regionaldiff report` writes the document
    in docs/ablation.md's format (table, setup, figure, paired claims) from the runs in MLflow."""
    small = [*TINY, "encoder.max_epochs=1", "ldm.max_epochs=1", "ldm.sampling.num_steps=2"]
    run_cli("experiment=ablation_regions", "seed=0,1", "ablation=global_cls,regional_predicted", *small)
    out = tmp_path / "docs"
    proc = run_cli("report", "--experiment", "ablation_regions", "--out", str(out), "--name", "ablation")
    text = (out / "ablation.md").read_text()
    assert proc.stdout.startswith("# Region-awareness ablation (synthetic benchmark)")
    assert "Produced by `regionaldiff experiment=ablation_regions` then `regionaldiff report`" in text
    assert "| arm | seeds | class acc. of reconstructions | region IoU of reconstructions |" in text
    arm = "+ predicted region maps, ControlNet trained on predicted maps"
    assert "| + classification | 2 |" in text and f"| {arm} | 2 |" in text
    assert "Setup (from the runs' params): dataset.n_train=48" in text and "![ablation](ablation.png)" in text
    claims = [line for line in text.splitlines() if line.startswith(f"| {arm} ")]
    assert len(claims) == 3  # the table row, and its two claims against + classification
    assert (out / "ablation.png").stat().st_size > 5000 and (out / "ablation.csv").is_file()


def test_per_subject_plot_when_subjects_are_swept(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = str(tmp_path / "multiruns" / "subjects")
    for num, subject in enumerate((1, 2, 10)):
        tracker = JobTracker(True, uri, "things", tmp_path / "art", f"#{num}", sweep_dir=sweep, system_metrics=False)
        tracker.set_tags({"regionaldiff.overrides": f"dataset.subjects=[{subject}]"})
        tracker.log_metrics({"eval/ssim": 0.1 * subject})
        tracker.finish()
    report = build_report(load_sweep(uri, sweep_dir=sweep), ReportSpec(), tmp_path / "out", log_artifacts=False)
    assert "grouped by `dataset.subjects`" in report.markdown and "| [10] | 1 | 1.000 ± 0.000 |" in report.markdown
    assert (tmp_path / "out" / "report_subjects.png").read_bytes()[:4] == b"\x89PNG"


def test_a_setting_named_after_subjects_is_not_a_subject_key():
    from regionaldiff.tracking.report import names_subjects, tick_label

    assert tick_label("encoder.subject_layer=none, ldm=frozen_global") == "none\nfrozen\nglobal"
    assert tick_label("global_mae") == "global\nmae"

    assert names_subjects("dataset.subjects") and names_subjects("dataset.test_subject")
    assert names_subjects("dataset.leave_out_subject") and not names_subjects("encoder.subject_layer")


def test_a_long_figure_title_is_wrapped_to_the_figure_width():
    title = (
        "Leave one subject out of 4 at subject_jitter 0.15 and 0.2 (synthetic_things preset, test split): bars = mean"
    )
    lines = wrap_title(title, 12.0).splitlines()
    assert len(lines) == 1  # 12 inches hold 156 characters
    lines = wrap_title(title, 4.0).splitlines()
    assert len(lines) == 3 and max(map(len, lines)) <= 52 and " ".join(lines) == title


def test_leave_one_subject_out_folds_are_the_repeats_the_arms_are_paired_on(tmp_path):
    """experiment=subjects_things_loso: one seed, the left-out subject varies; ``pair_by: dataset.test_subject``
    pairs the arms fold by fold (grouping by the arm alone with the default pair_by would see seed 0 four times)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = str(tmp_path / "multiruns" / "loso")
    for num, (fold, layer) in enumerate((f, a) for f in range(4) for a in ("none", "token")):
        tracker = JobTracker(True, uri, "loso", tmp_path / "art", f"#{num}", sweep_dir=sweep, system_metrics=False)
        tracker.set_tags({"regionaldiff.overrides": f"dataset.test_subject={fold} encoder.subject_layer={layer}"})
        tracker.client.log_param(tracker.run_id, "seed", "0")
        # the token adds 0.02 on every fold; the folds differ by 0.1 (a fold effect pairing removes)
        tracker.log_metrics({"eval/retrieval_top1": 0.1 * fold + (0.02 if layer == "token" else 0.0)})
        tracker.finish()
    spec = {
        "group_by": ["encoder.subject_layer"],
        "claims": [{"a": "token", "b": "none", "metric": "eval/retrieval_top1"}],
    }
    with pytest.raises(ReportError, match="seed 0 is in more than one run"):
        build_report(
            load_sweep(uri, sweep_dir=sweep), ReportSpec.from_mapping(spec), tmp_path / "o1", log_artifacts=False
        )
    spec["pair_by"] = "dataset.test_subject"
    report = build_report(
        load_sweep(uri, sweep_dir=sweep), ReportSpec.from_mapping(spec), tmp_path / "o2", log_artifacts=False
    )
    assert "| variant | `dataset.test_subject` values | eval/retrieval_top1 |" in report.markdown
    assert "| token | 4 | 0.170 ± 0.129 |" in report.markdown
    # paired fold by fold: +0.020 with no spread, shown; unpaired, the fold spread (0.129) would hide it
    assert "| 4 | +0.020 ± 0.000 |" in report.markdown and report.verdicts[0][1] is True
    assert "per-`dataset.test_subject` value differences" in report.markdown
    # a pair_by key the runs do not have is named
    spec["pair_by"] = "dataset.subjects"
    with pytest.raises(ReportError, match="no override or param 'dataset.subjects'"):
        build_report(
            load_sweep(uri, sweep_dir=sweep), ReportSpec.from_mapping(spec), tmp_path / "o3", log_artifacts=False
        )


def test_a_sweep_without_a_report_spec_is_grouped_by_what_varies(tmp_path):
    """`make sweep` (`-m ldm=global,regional`) and `-m seed=0,1`: the jobs' logged config has no report: section
    (it used to be read as a spec: "report spec: unknown keys"); every metric is tabled with its figure."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = str(tmp_path / "multiruns" / "s")
    config = tmp_path / "config_resolved.yaml"
    config.write_text("seed: 0\ndataset:\n  n_train: 48\nldm:\n  name: x\nreport_note: not a spec\n")
    parent = ""
    for num, (ldm, seed, miou) in enumerate([("global", 0, 0.1), ("regional", 0, 0.3), ("global", 1, 0.2)]):
        tracker = JobTracker(True, uri, "exp", tmp_path / "art", f"#{num}", sweep_dir=sweep, system_metrics=False)
        tracker.set_tags({"regionaldiff.overrides": f"ldm={ldm} seed={seed}"})
        tracker.client.log_param(tracker.run_id, "seed", str(seed))
        tracker.client.log_artifact(tracker.run_id, str(config))
        tracker.log_metrics({"eval/recon_region_miou": miou, "eval/ssim": 0.6})
        tracker.finish("FINISHED")
        parent = tracker.parent_run_id or ""
    out = tmp_path / "out"
    assert main(["--run-id", parent, "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    text = (out / "report.md").read_text()
    assert "grouped by `ldm`" in text
    assert "| variant | seeds | eval/recon_region_miou | eval/ssim |" in text
    assert "| global | 2 | 0.150 ± 0.071 | 0.600 ± 0.000 |" in text and "| regional | 1 | 0.300 ± 0.000 |" in text
    rows = {r["variant"]: r for r in csv.DictReader((out / "report.csv").open())}
    assert rows["global"]["eval/recon_region_miou:n"] == "2" and rows["regional"]["eval/ssim:mean"] == "0.6"
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    # the same from the sweep folder
    assert main(["--sweep-dir", sweep, "--tracking-uri", uri, "--out", str(tmp_path / "o2"), "--no-log"]) == 0
