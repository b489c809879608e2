"""Tracking records kept in the job folder first, then sent to MLflow with retries (docs/failures.md).

A tracking server that goes away for a few minutes (a restart, a network cut) must cost no work: a job that
trains for hours cannot stop at its next metric because MLflow's own retries ran out. So every tracking call of a
job (metrics, params, tags, artifacts, the end of the run) is first appended to ``<job folder>/tracking/<run
id>/journal.jsonl`` and then sent. A call that cannot be sent stays queued: later calls are journaled without trying
the server until a back-off delay has passed (2 s, doubling up to 60 s), then the queue is sent in order. At the
end of the job the queue is given a last chance (``REGIONALDIFF_TRACKING_WAIT`` seconds, default 60); what is
still unsent stays in the journal, and ``regionaldiff sync JOB_DIR`` replays it into the same MLflow run later.

``state.json`` beside it holds the run id, the tracking URI and how many records of the journal were sent, so a
replay never sends a record twice (one sent but not acknowledged when the connection dropped may be sent again:
MLflow accepts a param or tag logged twice with the same value; a metric point repeats).

A record the server refuses for good (HTTP 4xx, e.g. a param changed to another value) is dropped with a warning
rather than block the queue: only an unreachable or failing server (connection errors, timeouts, 5xx, 429) keeps
it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
STATE = "state.json"
#: the job folder's sub-folder holding the journal, its state and the texts logged as artifacts
FOLDER = "tracking"
#: seconds between tries while the server is away: the first delay, and the longest
FIRST_DELAY, MAX_DELAY = 2.0, 60.0
#: MLflow's own HTTP retries, bounded so that one call fails in seconds rather than minutes (the queue retries)
HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

Record = dict[str, Any]


def bound_http_retries() -> None:
    """Bound MLflow's HTTP retries (:data:`HTTP_SETTINGS`) unless the user set them: by default MLflow retries one
    call for 2 to 4 minutes, during which the job is stuck; the queue retries instead, without blocking."""
    for name, value in HTTP_SETTINGS.items():
        os.environ.setdefault(name, value)


def end_wait_seconds() -> float:
    """Seconds the end of a job waits for an away server to take the queued records (REGIONALDIFF_TRACKING_WAIT)."""
    try:
        return max(0.0, float(os.environ.get("REGIONALDIFF_TRACKING_WAIT", "60")))
    except ValueError:
        return 60.0


def is_refusal(err: BaseException) -> bool:
    """True when the server answered and refused the record for good (a 4xx other than 408/429): sending it again
    cannot help. Connection errors, timeouts and server errors are not refusals: the record is kept."""
    from mlflow.exceptions import MlflowException

    if not isinstance(err, MlflowException):
        return False
    code = err.get_http_status_code()
    return 400 <= code < 500 and code not in (408, 429)


def send(client: Any, run_id: str, record: Record) -> None:
    """Send one journal record to ``run_id`` with an ``MlflowClient``."""
    from mlflow.entities import Metric, Param, RunTag

    op = record["op"]
    if op == "batch":
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in record.get("metrics", [])],
            params=[Param(k, v) for k, v in record.get("params", [])],
            tags=[RunTag(k, v) for k, v in record.get("tags", [])],
        )
    elif op == "artifact":
        path = Path(record["path"])
        if not path.exists():
            log.warning("tracking: %s was logged as an artifact but is gone; not sent", path)
            return
        client.log_artifact(run_id, str(path), record.get("artifact_path"))
    elif op == "terminated":
        client.set_terminated(run_id, record["status"], end_time=record.get("end_time"))
    else:
        raise ValueError(f"unknown tracking record {op!r} in the journal")


class Outbox:
    """The queue of one job's tracking records: journaled in ``folder`` (None: kept in memory only), sent in order.

    Parameters
    ----------
    client : MlflowClient
        Sends the records.
    run_id : str
        The MLflow run they belong to.
    tracking_uri : str
        Where they go (in the state file and the messages).
    folder : Path, optional
        ``<job folder>/tracking/<run id>`` (one per run: a requeued job starts a new run in the same folder); None
        keeps the queue in memory (nothing survives the process).
    clock : callable
        Monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        client: Any,
        run_id: str,
        tracking_uri: str,
        folder: Path | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.folder = folder
        self.clock = clock
        self.pending: list[Record] = []
        self.sent = 0  # records of the journal handled (sent or refused), in order
        self.delay = 0.0
        self.next_try = 0.0
        self.away_since: float | None = None
        self.journal_failed = False
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self._write_state()

    @classmethod
    def resume(cls, folder: Path, client: Any) -> Outbox:
        """The outbox of a journal left by a job: its unsent records queued, bound to the run the state names."""
        state = read_state(folder)
        box = cls(client, str(state["run_id"]), str(state["tracking_uri"]), None)
        box.folder = folder
        records = read_journal(folder)
        box.sent = min(int(state.get("sent", 0)), len(records))
        box.pending = records[box.sent :]
        return box

    @property
    def away(self) -> bool:
        """True while the server did not take the last try."""
        return self.away_since is not None

    def put(self, record: Record) -> None:
        """Journal ``record`` and send the queue (unless the server is away and its next try is not due)."""
        if self.folder is not None:
            try:
                with open(self.folder / JOURNAL, "a") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as err:  # e.g. a full disk: the record still goes out, from memory
                if not self.journal_failed:
                    log.warning(
                        "tracking: could not write the journal %s (%s); records kept in memory", self.folder, err
                    )
                self.journal_failed = True
        self.pending.append(record)
        self.flush()

    def flush(self, wait: float = 0.0) -> bool:
        """Send the queued records in order; True when none is left. While the server is away, a try is made only
        when its back-off delay has passed; ``wait`` > 0 keeps trying (sleeping between tries) for that long."""
        deadline = self.clock() + wait
        while True:
            if not self.pending:
                return True
            now = self.clock()
            if not self.away or now >= self.next_try:
                if self._send_pending():
                    return True
            remaining = deadline - self.clock()
            if remaining <= 0:
                return False
            time.sleep(max(0.05, min(remaining, self.next_try - self.clock())))

    def _send_pending(self) -> bool:
        while self.pending:
            record = self.pending[0]
            try:
                send(self.client, self.run_id, record)
            except Exception as err:  # noqa: BLE001 - any failure to reach the server keeps the record
                if is_refusal(err):
                    log.warning("tracking: the server refused a %s record (%s); dropped", record["op"], err)
                else:
                    self._went_away(err)
                    return False
            self.pending.pop(0)
            self.sent += 1
            self._write_state()
        if self.away:
            assert self.away_since is not None
            log.warning(
                "tracking: %s is back after %.0f s; every queued record was sent",
                self.tracking_uri,
                self.clock() - self.away_since,
            )
        self.away_since, self.delay = None, 0.0
        return True

    def _went_away(self, err: BaseException) -> None:
        from regionaldiff.errors import one_line

        now = self.clock()
        if self.away_since is None:
            self.away_since = now
            where = f" in {self.folder / JOURNAL}" if self.folder is not None else " in memory"
            log.warning(
                "tracking: %s did not take a record (%s); the job goes on, keeping %d record(s)%s and retrying",
                self.tracking_uri,
                one_line(str(err))[:300],
                len(self.pending),
                where,
            )
        self.delay = min(MAX_DELAY, max(FIRST_DELAY, self.delay * 2))
        self.next_try = now + self.delay

    def _write_state(self) -> None:
        if self.folder is None:
            return
        state = {"run_id": self.run_id, "tracking_uri": self.tracking_uri, "sent": self.sent}
        tmp = self.folder / f".{STATE}.tmp"
        try:
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.folder / STATE)
        except OSError as err:  # a full disk must not stop the job from the tracking side
            log.debug("tracking: could not write %s: %s", self.folder / STATE, err)


def read_journal(folder: Path) -> list[Record]:
    """The records of ``folder/journal.jsonl`` in order (a last line cut off by a crash is ignored)."""
    path = folder / JOURNAL
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # only the last line can be incomplete (the writer appends)
    return records


def read_state(folder: Path) -> dict[str, Any]:
    """``folder/state.json``: the run id, the tracking URI and the number of records sent."""
    return dict(json.loads((folder / STATE).read_text()))


def batch_record(
    metrics: Iterable[tuple[str, float, int, int]] = (),
    params: Iterable[tuple[str, str]] = (),
    tags: Iterable[tuple[str, str]] = (),
) -> Record:
    """A ``log_batch`` record: metrics as ``(key, value, timestamp ms, step)``, params and tags as ``(key, value)``."""
    record: Record = {"op": "batch"}
    for name, items in (("metrics", metrics), ("params", params), ("tags", tags)):
        values = [list(item) for item in items]
        if values:
            record[name] = values
    return record
