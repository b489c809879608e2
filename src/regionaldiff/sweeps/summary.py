"""A sweep's record of its jobs and its end: each job's status file (``<sweep dir>/.jobs/<num>.json``), the outcome
of every job (:class:`SweepOutcome`), and the end of the sweep (:func:`finish_sweep`): the summary table in
``<sweep dir>/summary.md`` and the parent MLflow run ended with it."""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOBS_DIR = ".jobs"
#: statuses of a job that count as done (a reused job finished in an earlier run of the same sweep)
DONE = ("FINISHED", "REUSED")


def write_job_status(sweep_dir: str | Path, num: int, **status: Any) -> None:
    """A job's status file, ``<sweep dir>/.jobs/<num>.json`` (written atomically)."""
    folder = Path(sweep_dir) / JOBS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{num}.json.{os.getpid()}"
    tmp.write_text(json.dumps({"num": num, **status}, indent=2, default=str))
    tmp.replace(folder / f"{num}.json")


def read_job_statuses(sweep_dir: str | Path) -> dict[int, dict[str, Any]]:
    """``job number -> status`` of every job that wrote one."""
    found: dict[int, dict[str, Any]] = {}
    for path in sorted((Path(sweep_dir) / JOBS_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            found[int(data["num"])] = data
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def override_tokens(overrides: str) -> list[str]:
    """A job's overrides as Hydra read them: a quoted value with spaces (``report.title='A b'``) is one token,
    quotes kept."""
    return re.findall(r"""(?:[^\s'"]+|'[^']*'|"[^"]*")+""", overrides) or overrides.split()


@dataclass
class JobOutcome:
    """One row of a sweep's summary."""

    num: int
    overrides: str
    status: str
    reason: str = ""
    run_id: str = ""


@dataclass
class SweepOutcome:
    """A sweep's end: its jobs and its parent run."""

    jobs: list[JobOutcome] = field(default_factory=list)
    parent_run_id: str | None = None
    sweep_dir: str = ""

    @property
    def failed(self) -> list[JobOutcome]:
        return [j for j in self.jobs if j.status not in DONE]

    @property
    def status(self) -> str:
        return "FINISHED" if self.jobs and not self.failed else "FAILED"

    @property
    def headline(self) -> str:
        n, k = len(self.jobs), len(self.failed)
        reused = sum(j.status == "REUSED" for j in self.jobs)
        text = f"{k} of {n} failed" if k else f"all {n} finished"
        return text + (f" ({reused} reused from an earlier run of this sweep)" if reused else "")

    def counts(self) -> dict[str, int]:
        return dict(Counter(j.status for j in self.jobs))

    def swept(self) -> tuple[list[str], list[str]]:
        """(override keys whose values differ between jobs, the overrides every job shares)."""
        values: dict[str, set[str]] = {}
        for j in self.jobs:
            for token in override_tokens(j.overrides):
                key, _, value = token.partition("=")
                values.setdefault(key, set()).add(value)
        swept = [k for k, v in values.items() if len(v) > 1]
        common = sorted(
            {t for j in self.jobs for t in override_tokens(j.overrides) if t.partition("=")[0] not in swept}
        )
        return swept, common

    def markdown(self) -> str:
        """The summary table; the overrides column shows what differs between jobs (all of them: ``all``)."""
        swept, common = self.swept()
        lines = ["| job | overrides | status | reason | run id |", "| --- | --- | --- | --- | --- |"]
        for j in self.jobs:
            shown = " ".join(t for t in override_tokens(j.overrides) if t.partition("=")[0] in swept) or j.overrides
            reason = j.reason.replace("|", "\\|")
            lines.append(f"| #{j.num} | `{shown or '(none)'}` | {j.status} | {reason} | {j.run_id} |")
        if common and swept:
            lines.append(f"\nEvery job also had: `{' '.join(common)}`.")
        return "\n".join(lines)


#: the outcome of the last sweep this process launched (read by the CLI for its exit status)
NO_REPORT = "the job ended without reporting (killed, out of memory, or its node lost?)"


def collect_outcomes(
    jobs: list[list[str]] | None, statuses: dict[int, dict[str, Any]], children: list[Any]
) -> list[JobOutcome]:
    """Each job's status: its status file, else its latest MLflow attempt, else "NOT RUN"."""
    from regionaldiff.tracking.mlflow_run import FAILURE_TAG, OVERRIDES_TAG, job_key, latest_attempts

    latest = latest_attempts(children)
    by_num: dict[int, Any] = {}
    for i, run in enumerate(sorted(latest.values(), key=lambda r: r.info.start_time or 0)):
        num = run.data.tags.get("regionaldiff.job_num", "")
        by_num.setdefault(int(num) if num.isdigit() else i, run)
    if jobs is not None:
        nums = list(range(len(jobs)))
    else:
        nums = sorted(set(statuses) | set(by_num))
    outcomes = []
    for num in nums:
        overrides = " ".join(jobs[num]) if jobs is not None else ""
        run = latest.get(job_key(overrides)) if jobs is not None else by_num.get(num)
        st = statuses.get(num)
        if st is not None:
            status, reason, run_id = str(st.get("status")), str(st.get("reason") or ""), str(st.get("run_id") or "")
            overrides = overrides or " ".join(st.get("overrides") or [])
            if status == "RUNNING":
                status, reason = "FAILED", NO_REPORT
        elif run is not None:
            status, reason, run_id = run.info.status, run.data.tags.get(FAILURE_TAG, ""), run.info.run_id
            overrides = overrides or run.data.tags.get(OVERRIDES_TAG, "")
            if status == "RUNNING":
                status, reason = "FAILED", NO_REPORT
        else:
            status, reason, run_id = "NOT RUN", "the job did not start", ""
        outcomes.append(JobOutcome(num, overrides, status, reason, run_id or (run.info.run_id if run else "")))
    return outcomes


def finish_sweep(
    tracking_uri: str | None, experiment_name: str, sweep_dir: str, jobs: list[list[str]] | None = None
) -> SweepOutcome:
    """End the sweep in ``sweep_dir``: each job's outcome (status files, else MLflow), the summary table in
    ``<sweep dir>/summary.md``, and (``tracking_uri`` set) the parent run: tags, the summary as its description
    and artifact, FINISHED when every job finished (or was reused), else FAILED with "k of n failed". A child
    still RUNNING (its job was killed) is ended FAILED."""
    from regionaldiff.tracking.mlflow_run import find_sweep_parent, sweep_children

    statuses = read_job_statuses(sweep_dir)
    client = parent = None
    children: list[Any] = []
    if tracking_uri:
        from mlflow.tracking import MlflowClient

        from regionaldiff.tracking.outbox import bound_http_retries

        bound_http_retries()  # a server away at the end: seconds, not MLflow's minutes of retries
        try:
            client = MlflowClient(tracking_uri)
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is not None:
                parent = find_sweep_parent(client, experiment.experiment_id, sweep_dir)
                if parent is not None:
                    children = sweep_children(client, parent)
        except Exception as err:  # noqa: BLE001 - the server is away: the summary comes from the status files
            log.warning(
                "the MLflow tracking server %s did not answer at the end of the sweep (%s): the summary comes from "
                "the jobs' status files and the parent run was not updated",
                tracking_uri,
                " ".join(str(err).split())[:300],
            )
            client = parent = None
            children = []
    outcome = SweepOutcome(collect_outcomes(jobs, statuses, children), parent.info.run_id if parent else None)
    outcome.sweep_dir = sweep_dir
    text = f"Sweep {sweep_dir}: {outcome.headline}.\n\n{outcome.markdown()}\n"
    folder = Path(sweep_dir)
    if folder.is_dir():
        (folder / "summary.md").write_text(text)
    if client is not None and parent is not None:
        try:
            _end_parent(client, parent, children, outcome, text)
        except Exception as err:  # noqa: BLE001 - the server went away: the summary is in the sweep folder
            log.warning("could not end the sweep's parent run in MLflow (%s); its summary is in %s", err, folder)
    return outcome


def _end_parent(client: Any, parent: Any, children: list[Any], outcome: SweepOutcome, text: str) -> None:
    """End a sweep's parent run with its outcome, and its children left RUNNING by killed jobs."""
    from regionaldiff.tracking.mlflow_run import FAILURE_TAG

    run_id = parent.info.run_id
    stale = {o.run_id for o in outcome.jobs if o.reason == NO_REPORT}
    latest = {o.run_id for o in outcome.jobs}
    for child in children:
        if child.info.status != "RUNNING":
            continue
        if child.info.run_id in stale:
            client.set_tag(child.info.run_id, FAILURE_TAG, NO_REPORT)
            client.set_terminated(child.info.run_id, "FAILED")
        elif child.info.run_id not in latest:  # an attempt killed without a word (e.g. preempted), run again
            client.set_tag(child.info.run_id, FAILURE_TAG, "interrupted; the job ran again in a later attempt")
            client.set_terminated(child.info.run_id, "KILLED")
    counts = outcome.counts()
    for key in ("FINISHED", "REUSED", "FAILED", "RUNNING", "KILLED"):
        client.set_tag(run_id, f"regionaldiff.children.{key}", str(counts.get(key, 0)))
    client.set_tag(run_id, "regionaldiff.children", str(len(outcome.jobs)))
    client.set_tag(run_id, "regionaldiff.failed", f"{len(outcome.failed)} of {len(outcome.jobs)} failed")
    client.set_tag(run_id, "mlflow.note.content", text[:5000])
    client.log_text(run_id, text, "summary.md")
    client.set_terminated(run_id, outcome.status)
