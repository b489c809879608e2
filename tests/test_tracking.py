import json

import pytest

from regionaldiff.tracking.mlflow_run import (
    JobTracker,
    flatten,
    resolve_tracking_uri,
    sweep_run_name,
    write_metrics_json,
)


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert resolve_tracking_uri(None, tmp_path) == "sqlite:///elsewhere.db"
    assert resolve_tracking_uri("http://localhost:5000", tmp_path) == "http://localhost:5000"


def test_file_store_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "mlruns"))
    with pytest.raises(ValueError, match="file store"):
        resolve_tracking_uri(None, tmp_path)


def test_flatten_nested_config():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == {"a.b": 1, "a.c.d": [1, 2], "e": "x"}


def test_metrics_json_is_flat_with_skipped_reasons(tmp_path):
    write_metrics_json(tmp_path / "m.json", {"eval/ssim": 0.5}, {"eval/fid": "no Inception weights"})
    data = json.loads((tmp_path / "m.json").read_text())
    assert data == {"eval/ssim": 0.5, "skipped": {"eval/fid": "no Inception weights"}}


def test_sweep_jobs_share_one_parent_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    jobs = [JobTracker(True, uri, "exp", tmp_path / "art", f"job{i}", sweep_dir="/sweeps/s1") for i in range(2)]
    single = JobTracker(True, uri, "exp", tmp_path / "art", "single")
    assert jobs[0].parent_run_id == jobs[1].parent_run_id is not None
    assert single.parent_run_id is None
    jobs[0].log_metrics({"eval/ssim": 0.25})
    run = jobs[0].client.get_run(jobs[0].run_id)
    assert run.data.tags["mlflow.parentRunId"] == jobs[0].parent_run_id
    assert run.data.metrics["eval/ssim"] == 0.25


def _multirun_yaml(folder, task, params=None):
    from omegaconf import OmegaConf

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"hydra": {"overrides": {"task": task}, "sweeper": {"params": params}}}
    OmegaConf.save(OmegaConf.create(cfg), folder / "multirun.yaml")
    return folder


def test_sweep_parent_run_is_named_after_what_was_swept(tmp_path):
    sweep = _multirun_yaml(tmp_path / "sweeps" / "s2", ["ldm=global,regional", "seed=0,1"])
    assert sweep_run_name(sweep) == "sweep: ldm=global,regional seed=0,1"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = JobTracker(True, uri, "exp", tmp_path / "art", "#0 ldm=global seed=0", sweep_dir=str(sweep))
    parent = job.client.get_run(job.parent_run_id)
    assert parent.info.run_name == "sweep: ldm=global,regional seed=0,1"


def test_sweep_name_includes_an_experiment_configs_sweeper_params(tmp_path):
    sweep = _multirun_yaml(
        tmp_path / "s3",
        ["experiment=ablation_regions", "seed=3,4"],
        {"seed": "0,1,2", "ablation": "global_mae,global_cls"},
    )
    assert sweep_run_name(sweep) == "sweep: experiment=ablation_regions seed=3,4 ablation=global_mae,global_cls"
    assert sweep_run_name(tmp_path / "no-such-sweep") == "sweep no-such-sweep"


def test_config_keys_mlflow_refuses_are_logged_with_underscores(tmp_path):
    from omegaconf import OmegaConf

    tracker = JobTracker(True, f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", tmp_path / "art", "job")
    titles = {"ablation=a, ldm.sampling.map_temperature=0.25": "arm a, sharpened"}
    tracker.log_config(OmegaConf.create({"seed": 0, "report": {"variant_titles": titles}}), tmp_path)
    params = tracker.client.get_run(tracker.run_id).data.params
    assert params["report.variant_titles.ablation_a_ ldm.sampling.map_temperature_0.25"] == "arm a, sharpened"
    assert params["seed"] == "0"
    # the YAML artifact keeps the real keys
    assert "ablation=a, ldm.sampling.map_temperature=0.25" in (tmp_path / "config_resolved.yaml").read_text()
