"""Sweeps: the launcher presets (joblib, submitit's local executor), one parent run per sweep that ends when the
sweep ends, tracking under parallel jobs, and CPU threads split between jobs that run at once."""

from __future__ import annotations

import importlib.util

import pytest
from omegaconf import OmegaConf

from conftest import TINY, mlflow_runs
from regionaldiff.sweeps.callback import threads_per_job
from regionaldiff.sweeps.summary import finish_sweep
from regionaldiff.tracking.mlflow_run import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, JobTracker

# the prepare step only: every job still makes its MLflow run, logs its config and a metric (time/prepare_s)
PREPARE = [*TINY, "pipeline.steps=[prepare]"]


def _sweep_runs(tmp_path):
    client, runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("regionaldiff.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return client, parents, children


@pytest.mark.parametrize(
    "launcher, cores, expected",
    [
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}, 2, 1),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}, 16, 8),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, 4, 1),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 8}, 2, 1),
        (
            {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", "cpus_per_task": 3},
            8,
            3,
        ),
        (
            {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", "cpus_per_task": 8},
            8,
            None,
        ),
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 2, None),
    ],
)
def test_threads_are_split_between_parallel_jobs(launcher, cores, expected):
    assert threads_per_job(OmegaConf.create(launcher), cores=cores) == expected


def test_experiment_is_tagged_for_the_model_training_view(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = JobTracker(True, uri, "exp", tmp_path / "art", "job", system_metrics=False)
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    tracker.finish()


def test_finish_sweep_counts_children_and_fails_when_one_failed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = str(tmp_path / "sweep")
    jobs = [
        JobTracker(True, uri, "exp", tmp_path / "art", f"j{i}", sweep_dir=sweep, system_metrics=False)
        for i in range(3)
    ]
    assert len({j.parent_run_id for j in jobs}) == 1
    jobs[0].finish("FINISHED")
    jobs[1].finish("FAILED")
    jobs[2].finish("FINISHED")
    jobs[1].set_tags({"regionaldiff.failure": "out of memory"})
    result = finish_sweep(uri, "exp", sweep)
    assert result.parent_run_id == jobs[0].parent_run_id and result.status == "FAILED"
    assert result.counts() == {"FINISHED": 2, "FAILED": 1} and result.headline == "1 of 3 failed"
    assert [(j.status, j.reason, j.run_id) for j in result.jobs][1] == ("FAILED", "out of memory", jobs[1].run_id)
    parent = jobs[0].client.get_run(jobs[0].parent_run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["regionaldiff.children.FINISHED"] == "2"
    assert parent.data.tags["regionaldiff.children.FAILED"] == "1"
    assert parent.data.tags["regionaldiff.failed"] == "1 of 3 failed"
    assert "out of memory" in parent.data.tags["mlflow.note.content"]
    # no parent run, no status files: nothing to summarise
    other = finish_sweep(uri, "exp", str(tmp_path / "other"))
    assert other.parent_run_id is None and other.jobs == []


@pytest.mark.slow
def test_basic_sweep_parent_ends_finished_or_failed(run_cli, tmp_path):
    """The basic launcher: the parent run is FINISHED after a sweep whose jobs all finished; FAILED (with the
    counts) after a sweep where one job failed, although Hydra skips on_multirun_end then."""
    run_cli("-m", "seed=0,1", *PREPARE)
    _, parents, children = _sweep_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].info.status == "FINISHED" and parents[0].data.tags["regionaldiff.children.FINISHED"] == "2"
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["regionaldiff.job_num"] in {"0", "1"}
        assert child.data.tags["regionaldiff.overrides"].startswith("seed=")

    # ldm=regional with regionmap=none cannot start: the check before launching stops the sweep; run anyway, it
    # fails in the job (after its MLflow run started) and the other job finishes
    proc = run_cli("-m", "regionmap=oracle,none", *PREPARE, check=False)
    assert proc.returncode == 2 and "1 of 2 jobs of this sweep cannot start" in proc.stderr
    proc = run_cli("-m", "regionmap=oracle,none", *PREPARE, "hydra.callbacks.sweep.run_anyway=true", check=False)
    assert proc.returncode == 1
    _, parents, children = _sweep_runs(tmp_path)
    second = next(
        p for p in parents if p.info.run_id not in {c.info.run_id for c in children} and p.info.status != "FINISHED"
    )
    assert second.info.status == "FAILED"
    assert second.data.tags["regionaldiff.children.FINISHED"] == "1"
    assert second.data.tags["regionaldiff.children.FAILED"] == "1"


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None, reason="needs hydra-joblib-launcher"
)
def test_joblib_sweep_four_parallel_jobs_one_store(run_cli, tmp_path):
    """4 jobs at once (joblib) against one sqlite store: one parent, 4 finished children, no lost metric, no
    "database is locked"; each job gets its share of the cores."""
    # the same dataset for every job: the 4 jobs build the same synthetic cache file at the same moment
    proc = run_cli("-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=4", "seed=0,1,2,3", *PREPARE)
    log = proc.stdout + proc.stderr
    assert "database is locked" not in log
    client, parents, children = _sweep_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["regionaldiff.children.FINISHED"] == "4"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len(children) == 4 and len({c.data.params["seed"] for c in children}) == 4
    import os

    cores = len(os.sched_getaffinity(0))
    for child in children:
        assert child.info.status == "FINISHED"
        assert "time/prepare_s" in child.data.metrics
        assert len(client.get_metric_history(child.info.run_id, "time/prepare_s")) == 1
        assert child.data.tags["regionaldiff.torch_threads"] == str(max(1, cores // 4))


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None, reason="needs hydra-submitit-launcher"
)
def test_submitit_local_sweep_is_one_parent_with_its_children(run_cli, tmp_path):
    """The SLURM launcher's code path with submitit's local executor: two jobs, one parent, both children."""
    # dataset.seed: see the joblib test (jobs building the same synthetic cache at once race on its temporary file)
    run_cli("-m", "hydra/launcher=submitit_local_test", "dataset.seed=0,1", *PREPARE)
    _, parents, children = _sweep_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(c.info.status == "FINISHED" and c.data.tags["regionaldiff.torch_threads"] == "1" for c in children)


def test_only_rank_zero_tracks(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "1")
    tracker = JobTracker(True, f"sqlite:///{tmp_path / 'm.db'}", "exp", tmp_path / "art", "job")
    assert not tracker.enabled and tracker.run_id is None


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None, reason="needs hydra-optuna-sweeper"
)
def test_optuna_preset_composes(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from regionaldiff.config import config_dir, register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/sweeper=optuna_search"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"ldm.lr", "encoder.lr", "ldm.cond_drop_prob"}


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None, reason="needs hydra-optuna-sweeper"
)
def test_optuna_search_runs_trials_as_children_of_one_parent(run_cli, tmp_path):
    proc = run_cli(
        "-m",
        "hydra/sweeper=optuna_search",
        "hydra.sweeper.n_trials=2",
        *TINY,
    )
    assert "Best value" in proc.stdout + proc.stderr
    _, parents, children = _sweep_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2 and parents[0].info.status == "FINISHED"
    assert len({c.data.params["ldm.lr"] for c in children}) == 2


def test_system_metrics_are_logged_while_a_job_runs(tmp_path, monkeypatch):
    pytest.importorskip("psutil")
    import time

    monkeypatch.setenv("REGIONALDIFF_SYSTEM_METRICS_INTERVAL", "0.5")
    tracker = JobTracker(True, f"sqlite:///{tmp_path / 'm.db'}", "exp", tmp_path / "art", "job")
    time.sleep(2.0)
    tracker.finish()
    metrics = tracker.client.get_run(tracker.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics


def test_credentials_in_a_tracking_uri_never_reach_the_logged_params(tmp_path):
    from regionaldiff.tracking.mlflow_run import redact

    assert redact("http://alice:s3cret@login01:5000") == "http://***@login01:5000"
    assert redact("postgresql://u:p@db/mlflow") == "postgresql://***@db/mlflow"
    assert redact("sqlite:////shared/mlflow.db") == "sqlite:////shared/mlflow.db"
    tracker = JobTracker(True, f"sqlite:///{tmp_path / 'm.db'}", "exp", tmp_path / "art", "job", system_metrics=False)
    tracker.log_config(OmegaConf.create({"logger": {"tracking_uri": "http://alice:s3cret@login01:5000"}}), tmp_path)
    params = tracker.client.get_run(tracker.run_id).data.params
    assert params["logger.tracking_uri"] == "http://***@login01:5000"
    assert "s3cret" not in (tmp_path / "config_resolved.yaml").read_text()
    tracker.finish()


def test_the_summary_keeps_a_quoted_override_whole():
    from regionaldiff.sweeps.summary import JobOutcome, SweepOutcome

    title = "report.title='The method, synthetic_imagenet preset'"
    outcome = SweepOutcome(
        [JobOutcome(0, f"seed=0 {title}", "FINISHED", run_id="a"), JobOutcome(1, f"seed=1 {title}", "FINISHED")]
    )
    assert outcome.swept() == (["seed"], [title])
    assert f"Every job also had: `{title}`." in outcome.markdown()


def test_a_rerun_reuses_a_finished_job_only_when_its_config_is_the_same(tmp_path, compose_cfg):
    """A rerun of a sweep after a default changed (same overrides, another composed config) runs the job again
    instead of reporting the earlier attempt's numbers as the new config's."""
    from mlflow.tracking import MlflowClient

    from regionaldiff.sweeps.job import finished_attempt
    from regionaldiff.tracking.mlflow_run import CONFIG_TAG, OVERRIDES_TAG, ROLE_TAG, SWEEP_TAG, job_config_hash

    cfg = compose_cfg("seed=1")
    same, other = compose_cfg("seed=1"), compose_cfg("seed=1", "ldm.sampling.controlnet_scale=1.0")
    assert job_config_hash(cfg) == job_config_hash(same) != job_config_hash(other)
    assert "${" in OmegaConf.to_yaml(cfg)  # interpolations (the job's folder) stay unresolved: not in the hash
    # an experiment's report section (titles, claims) is presentation: editing it reruns no job
    loso = compose_cfg("experiment=subjects_things_loso", "dataset.test_subject=1")
    retitled = compose_cfg("experiment=subjects_things_loso", "dataset.test_subject=1", "report.title=Another")
    assert job_config_hash(loso) == job_config_hash(retitled)
    assert job_config_hash(loso) != job_config_hash(
        compose_cfg("experiment=subjects_things_loso", "dataset.test_subject=2")
    )

    uri, sweep_dir = f"sqlite:///{tmp_path / 'm.db'}", str(tmp_path / "sweep")
    client = MlflowClient(uri)
    exp = client.create_experiment("exp", artifact_location=str(tmp_path / "art"))
    parent = client.create_run(exp, tags={SWEEP_TAG: sweep_dir, ROLE_TAG: "sweep"})
    child = client.create_run(
        exp,
        tags={"mlflow.parentRunId": parent.info.run_id, OVERRIDES_TAG: "seed=1", CONFIG_TAG: job_config_hash(cfg)},
    )
    client.set_terminated(child.info.run_id, "FINISHED")
    untagged = client.create_run(exp, tags={"mlflow.parentRunId": parent.info.run_id, OVERRIDES_TAG: "seed=2"})
    client.set_terminated(untagged.info.run_id, "FINISHED")

    found = finished_attempt(uri, "exp", sweep_dir, ["seed=1"], job_config_hash(same))
    assert found is not None and found.info.run_id == child.info.run_id
    assert finished_attempt(uri, "exp", sweep_dir, ["seed=1"], job_config_hash(other)) is None
    # a run from before the hash was tagged is not known to be this job
    assert finished_attempt(uri, "exp", sweep_dir, ["seed=2"], job_config_hash(compose_cfg("seed=2"))) is None


def test_the_latest_attempt_of_a_job_is_the_one_reported():
    """A job run again (it failed, or its config changed since it finished) is reported by its latest attempt."""
    from types import SimpleNamespace

    from regionaldiff.tracking.mlflow_run import OVERRIDES_TAG, latest_attempts

    def run(run_id, overrides, status, start):
        info = SimpleNamespace(run_id=run_id, status=status, start_time=start)
        return SimpleNamespace(info=info, data=SimpleNamespace(tags={OVERRIDES_TAG: overrides}))

    runs = [
        run("old-config", "seed=0", "FINISHED", 1),
        run("failed", "seed=1", "FAILED", 2),
        run("new-config", "seed=0", "FINISHED", 3),
        run("rerun", "seed=1", "FINISHED", 4),
        run("once", "seed=2", "FINISHED", 5),
    ]
    latest = latest_attempts(runs)
    assert {key: r.info.run_id for key, r in latest.items()} == {
        "seed=0": "new-config",
        "seed=1": "rerun",
        "seed=2": "once",
    }
