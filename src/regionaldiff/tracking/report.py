"""``regionaldiff report``: a sweep's results from MLflow, as tables, paired comparisons and plots.

Given a sweep (its parent run id, its folder, or an experiment name for the latest sweep), the report reads the
sweep's child runs, groups the finished ones by the swept keys (seed excluded: seeds are the repetitions), and
writes, into a folder and as artifacts of the parent run(s) (under ``report/``):

- ``<name>.md``: the table (mean ± sample std over seeds), the paired comparisons of the claims, the failed jobs;
- ``<name>.csv``: the same table, one row per variant (mean, std and n of each metric);
- ``<name>.png``: per variant, the mean (bar) and each seed (dot) of the plotted metrics;
  ``<name>_subjects.png`` too when a swept key names subjects (one group of bars per subject).

What to report comes from the sweep's own config: the ``report:`` section of the experiment (see
``conf/experiment/ablation_regions.yaml``; the job logs it in ``config_resolved.yaml``), or ``--spec FILE.yaml``.
Without one (any sweep, e.g. ``-m ldm=global,regional`` or ``-m seed=0,1``), the runs are grouped by the overrides
that vary, every ``eval/...`` metric (else every logged metric but ``system/...``) is tabulated with its figure, and
no claim is tested.

Claims are paired by seed: all variants of one seed share the dataset and test scenes, so for each seed the
difference between two variants is taken; then the mean difference and its one-sided 95% lower confidence bound
(Student t over seeds). "A beats B" is shown when the bound is above 0; "A is not worse than B" when above
``-margin``. ``report.pair_by`` names another repeat key: the folds of leave-one-subject-out
(``dataset.test_subject``), the subjects of one model per subject (``dataset.subjects``).
"""

from __future__ import annotations

import csv
import os
import shlex
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

#: variant -> repeat (the seed, or the value of the report's pair_by) -> metrics
RunsByVariant = dict[str, dict[Any, dict[str, float]]]


class ReportError(Exception):
    """Bad input to the report (unknown run, empty sweep, no store): the message says what to do."""


# -- the spec ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """``a`` beats (``kind="better"``) or is not worse than (``kind="not_worse"``) ``b`` on ``metric``."""

    a: str
    b: str
    metric: str
    kind: str = "better"

    def __post_init__(self) -> None:
        if self.kind not in ("better", "not_worse"):
            raise ValueError(f"claim kind {self.kind!r} is not one of ['better', 'not_worse'].")


@dataclass
class ReportSpec:
    """What a report shows (the ``report:`` section of an experiment config).

    Parameters
    ----------
    title : str
        Heading of the markdown.
    command : str
        The command that ran the sweep (quoted in the markdown).
    variant_label : str
        Column header of the variants (e.g. ``arm``).
    group_by : list of str or None
        Keys that define a variant; None: the swept keys (overrides that differ between jobs) except ``seed``.
    metrics : dict
        ``metric -> title``, in table order; empty: every ``eval/...`` metric of the runs.
    variant_titles : dict
        ``variant -> title``; variants are ordered as listed here, the others after them.
    plots : list of str
        Metrics of the figure (default: the first three of ``metrics``).
    claims : list of Claim
        Paired comparisons to test.
    margin : float
        Non-inferiority margin of ``not_worse`` claims (absolute).
    setup_keys : list of str
        Params quoted in the setup line.
    pair_by : str
        The key whose values are the repetitions, on which the variants are paired: ``seed`` (default), or e.g.
        ``dataset.test_subject`` when the folds of leave-one-subject-out are the repeats (each fold's variants share
        its training and test subjects), or ``dataset.subjects`` when the subjects of one-model-per-subject are.
    """

    title: str = "Sweep report"
    command: str = ""
    variant_label: str = "variant"
    group_by: list[str] | None = None
    metrics: dict[str, str] = field(default_factory=dict)
    variant_titles: dict[str, str] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    margin: float = 0.05
    setup_keys: list[str] = field(default_factory=list)
    pair_by: str = "seed"

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> ReportSpec:
        data = dict(data or {})
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ReportError(
                f"report spec: unknown keys {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        claims = [c if isinstance(c, Claim) else Claim(**dict(c)) for c in data.pop("claims", None) or []]
        for key in ("metrics", "variant_titles"):
            data[key] = {str(k): str(v) for k, v in dict(data.get(key) or {}).items()}
        for key in ("plots", "setup_keys"):
            data[key] = [str(v) for v in data.get(key) or []]
        if data.get("group_by") is not None:
            data["group_by"] = [str(v) for v in data["group_by"]]
        return cls(claims=claims, **data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ReportSpec:
        """A YAML file holding the spec, or an experiment config with a ``report:`` section."""
        from omegaconf import OmegaConf

        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        assert isinstance(loaded, dict)
        return cls.from_mapping(loaded.get("report", loaded))

    @property
    def repeat(self) -> str:
        """What one repetition is called in the tables and text: "seed", or "`KEY` value" (``pair_by`` named)."""
        return "seed" if self.pair_by == "seed" else f"`{self.pair_by}` value"

    @property
    def repeats(self) -> str:
        return f"{self.repeat}s"

    def title_of(self, variant: str) -> str:
        return self.variant_titles.get(variant, variant)

    def metric_title(self, metric: str) -> str:
        return self.metrics.get(metric, metric)

    def order(self, variants: list[str] | set[str]) -> list[str]:
        return [v for v in self.variant_titles if v in variants] + sorted(
            v for v in variants if v not in self.variant_titles
        )


# -- statistics -------------------------------------------------------------------------------------------------
def summarise(runs: RunsByVariant, metrics: list[str]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``variant -> metric -> (mean, sample std, n)`` over the runs (seeds) of each variant."""
    table: dict[str, dict[str, tuple[float, float, int]]] = {}
    for variant, by_seed in runs.items():
        table[variant] = {}
        for key in metrics:
            values = np.array([r[key] for r in by_seed.values() if key in r], dtype=float)
            if len(values):
                std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                table[variant][key] = (float(values.mean()), std, len(values))
    return table


@dataclass(frozen=True)
class PairedDifference:
    """``A - B`` paired by seed: mean, sample std, number of seeds, one-sided 95% lower bound, one-sided p-value."""

    mean: float
    std: float
    n: int
    lower95: float
    p_greater: float

    @classmethod
    def of(
        cls, runs: RunsByVariant, a_name: str, b_name: str, metric: str, margin: float = 0.0
    ) -> PairedDifference | None:
        """None when fewer than two seeds have ``metric`` in both variants (no spread, no bound)."""
        a, b = runs.get(a_name, {}), runs.get(b_name, {})
        seeds = sorted(s for s in a.keys() & b.keys() if metric in a[s] and metric in b[s])
        if len(seeds) < 2:
            return None
        diff = np.array([a[s][metric] - b[s][metric] for s in seeds], dtype=float)
        mean, std, n = float(diff.mean()), float(diff.std(ddof=1)), len(diff)
        sem = std / np.sqrt(n)
        lower = mean - float(stats.t.ppf(0.95, n - 1)) * sem
        if sem > 0:
            p = float(stats.t.sf((mean + margin) / sem, n - 1))
        else:
            p = 0.0 if mean + margin > 0 else 1.0
        return cls(mean, std, n, lower, p)


def claims_markdown(runs: RunsByVariant, spec: ReportSpec) -> tuple[str, list[tuple[Claim, bool | None]]]:
    """A table of the paired comparisons of ``spec.claims`` whose two variants were run, and for each whether it
    is shown (None: fewer than two seeds)."""
    margin = spec.margin
    lines = [
        f"| claim | {spec.repeats} | mean difference (A - B) ± std | one-sided 95% lower bound | p | shown? |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    verdicts: list[tuple[Claim, bool | None]] = []
    not_run: list[str] = []
    for claim in spec.claims:
        if claim.a not in runs or claim.b not in runs:
            missing = [v for v in (claim.a, claim.b) if v not in runs]
            not_run.append(f"{claim.a!r} vs {claim.b!r} ({', '.join(repr(v) for v in missing)} not in this sweep)")
            continue
        threshold = 0.0 if claim.kind == "better" else -margin
        words = "beats" if claim.kind == "better" else f"is not worse (margin {margin:g}) than"
        text = f"{spec.title_of(claim.a)} {words} {spec.title_of(claim.b)} on {spec.metric_title(claim.metric)}"
        diff = PairedDifference.of(
            runs, claim.a, claim.b, claim.metric, margin=0.0 if claim.kind == "better" else margin
        )
        if diff is None:
            verdicts.append((claim, None))
            lines.append(f"| {text} | <2 | n/a | n/a | n/a | not enough {spec.repeats} |")
            continue
        shown = bool(diff.lower95 > threshold)
        verdicts.append((claim, shown))
        lines.append(
            f"| {text} | {diff.n} | {diff.mean:+.3f} ± {diff.std:.3f} | {diff.lower95:+.3f} (needs > {threshold:+.3f}) "
            f"| {diff.p_greater:.3f} | {'yes' if shown else 'no'} |"
        )
    if not_run:  # a partial sweep, or a claim that names its variants differently from the table's first column
        lines.append(
            f"\nNot tested, a variant not run: {'; '.join(not_run)}. Variants in this sweep: "
            f"{', '.join(repr(v) for v in sorted(runs))}."
        )
    return "\n".join(lines), verdicts


def to_markdown(table: dict[str, dict[str, tuple[float, float, int]]], spec: ReportSpec, metrics: list[str]) -> str:
    header = f"| {spec.variant_label} | {spec.repeats} | " + " | ".join(spec.metric_title(m) for m in metrics) + " |"
    lines = [header, "|" + " --- |" * (len(metrics) + 2)]
    for variant in spec.order(set(table)):
        cells = []
        n = max((v[2] for v in table[variant].values()), default=0)
        for key in metrics:
            if key in table[variant]:
                mean, std, _ = table[variant][key]
                cells.append(f"{mean:.3f} ± {std:.3f}")
            else:
                cells.append("n/a")
        lines.append(f"| {spec.title_of(variant)} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(
    table: dict[str, dict[str, tuple[float, float, int]]], spec: ReportSpec, metrics: list[str], path: Path
) -> Path:
    """One row per variant: its name and title, then mean, std and n of each metric."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([spec.variant_label, "title", *(f"{m}{s}" for m in metrics for s in (":mean", ":std", ":n"))])
        for variant in spec.order(set(table)):
            row: list[Any] = [variant, spec.title_of(variant)]
            for m in metrics:
                mean, std, n = table[variant].get(m, (float("nan"), float("nan"), 0))
                row += [f"{mean:.6g}", f"{std:.6g}", n]
            writer.writerow(row)
    return path


#: characters of a 10-point title per inch of figure (a conservative average glyph width)
TITLE_CHARS_PER_INCH = 13


def wrap_title(text: str, figure_width: float) -> str:
    """A figure title broken into lines that fit ``figure_width`` inches (a long title is not cut at the edges)."""
    return textwrap.fill(text, width=max(20, int(figure_width * TITLE_CHARS_PER_INCH)))


def set_figure_title(fig: Any, text: str) -> None:
    """The figure's title, wrapped to its width (:func:`wrap_title`)."""
    fig.suptitle(wrap_title(text, fig.get_figwidth()), fontsize=10)


COLOURS = ("#9e9e9e", "#607d8b", "#1976d2", "#90caf9", "#2e7d32", "#a5d6a7", "#ef6c00", "#ffcc80", "#6a1b9a")


def plot(runs: RunsByVariant, path: Path, spec: ReportSpec, panels: list[str], title: str | None = None) -> Path:
    """Per variant, the mean (bar) and each seed (dot) of each metric in ``panels``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = spec.order(set(runs))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(max(4.2, 0.7 * len(variants) + 1.5) * len(panels), 3.6), squeeze=False
    )
    for ax, metric in zip(axes[0], panels):
        for i, variant in enumerate(variants):
            values = [r[metric] for r in runs[variant].values() if metric in r]
            if not values:
                continue
            ax.bar(i, np.mean(values), color=COLOURS[i % len(COLOURS)], alpha=0.8)
            ax.scatter(
                np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values, color="k", s=12, zorder=3
            )
        ax.set_xticks(range(len(variants)), [tick_label(v) for v in variants], fontsize=8)
        ax.set_title(spec.metric_title(metric), fontsize=10)
    set_figure_title(fig, title or f"{spec.title}: bars = mean, dots = {spec.repeats.replace('`', '')}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_subjects(
    runs: RunsByVariant,
    variants: dict[str, dict[str, str]],
    subject_key: str,
    path: Path,
    spec: ReportSpec,
    panels: list[str],
) -> Path:
    """Per subject (x) and the other swept keys (one bar each), the mean of each metric in ``panels``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subjects = sorted({values[subject_key] for values in variants.values()}, key=_natural)
    others = sorted({_label({k: v for k, v in values.items() if k != subject_key}) for values in variants.values()})
    width = 0.8 / max(1, len(others))
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(max(5.0, 0.6 * len(subjects) * len(others) + 2) * len(panels) / 1.5, 3.6),
        squeeze=False,
    )
    for ax, metric in zip(axes[0], panels):
        for j, other in enumerate(others):
            xs, ys = [], []
            for i, subject in enumerate(subjects):
                for variant, values in variants.items():
                    rest = _label({k: v for k, v in values.items() if k != subject_key})
                    if values[subject_key] == subject and rest == other:
                        vals = [r[metric] for r in runs.get(variant, {}).values() if metric in r]
                        if vals:
                            xs.append(i + (j - (len(others) - 1) / 2) * width)
                            ys.append(float(np.mean(vals)))
            ax.bar(xs, ys, width=width, color=COLOURS[j % len(COLOURS)], label=other or "all")
        ax.set_xticks(range(len(subjects)), subjects, fontsize=8)
        ax.set_xlabel(subject_key)
        ax.set_title(spec.metric_title(metric), fontsize=10)
    if len(others) > 1:
        axes[0][0].legend(fontsize=7)
    set_figure_title(fig, f"{spec.title}: per subject (mean over {spec.repeats.replace('`', '')})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def tick_label(variant: str) -> str:
    """A variant's name under its bar: the values of a ``k=v, k=v`` name one per line (the keys are in the text)."""
    return "\n".join(part.split("=", 1)[-1] for part in variant.split(", ")).replace("_", "\n")


def names_subjects(key: str) -> bool:
    """Whether a swept key picks subjects (``dataset.subjects``, ``dataset.test_subject``,
    ``dataset.leave_out_subject``), not a setting named after them (``encoder.subject_layer``)."""
    return key.rsplit(".", 1)[-1].lower().endswith(("subject", "subjects"))


def _natural(text: str) -> tuple[Any, ...]:
    digits = "".join(ch for ch in text if ch.isdigit())
    return (int(digits) if digits else float("inf"), text)


def _label(values: dict[str, str]) -> str:
    """A variant's name: the value of its one key, else ``k=v, k=v``."""
    if len(values) == 1:
        return next(iter(values.values()))
    return ", ".join(f"{k}={v}" for k, v in values.items())


# -- reading MLflow ---------------------------------------------------------------------------------------------
@dataclass
class Sweep:
    """The runs of one or more sweeps, read from MLflow."""

    tracking_uri: str
    parent_ids: list[str]
    finished: list[Any]
    unfinished: list[Any]
    client: Any


def parse_overrides(text: str) -> dict[str, str]:
    """``"seed=0 ablation=global_mae"`` -> ``{"seed": "0", "ablation": "global_mae"}`` (``+``/``~`` dropped)."""
    pairs: dict[str, str] = {}
    if not text or text == "(none)":
        return pairs
    try:
        tokens = shlex.split(text)
    except ValueError:
        tokens = text.split()
    for token in tokens:
        if "=" in token:
            key, value = token.split("=", 1)
            pairs[key.lstrip("+~")] = value
    return pairs


def run_overrides(run: Any) -> dict[str, str]:
    tags = run.data.tags
    return parse_overrides(tags.get("regionaldiff.overrides") or tags.get("overrides", ""))


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('outputs/mlflow.db').resolve()}"


def open_store(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise ReportError(
                f"no MLflow store at {tracking_uri} (no file {db}). Run a sweep first, or pass --tracking-uri "
                "(or set MLFLOW_TRACKING_URI)."
            )
    return MlflowClient(tracking_uri)


def load_sweep(
    tracking_uri: str,
    run_ids: list[str] | None = None,
    sweep_dir: str | None = None,
    experiment: str | None = None,
) -> Sweep:
    """The child runs of the named sweeps (parent run ids, a sweep folder, or the latest sweep of an experiment)."""
    from mlflow.exceptions import MlflowException

    from regionaldiff.tracking.mlflow_run import ROLE_TAG, SWEEP_DIRS_TAG, SWEEP_TAG, latest_attempts

    client = open_store(tracking_uri)
    experiments = client.search_experiments()
    ids = [e.experiment_id for e in experiments]
    parents: list[Any] = []
    if run_ids:
        for run_id in run_ids:
            try:
                parents.append(client.get_run(run_id))
            except MlflowException as err:
                raise ReportError(f"no MLflow run {run_id!r} in {tracking_uri}.") from err
    elif sweep_dir:
        folder = str(Path(sweep_dir).resolve()).replace("'", "\\'")
        parents = client.search_runs(ids, f"tags.`{SWEEP_TAG}` = '{folder}' and tags.`{ROLE_TAG}` = 'sweep'")
        if not parents:  # an earlier folder of a sweep that was run again (the rerun attached to its parent)
            parents = [
                run
                for run in client.search_runs(
                    ids, f"tags.`{SWEEP_DIRS_TAG}` LIKE '%{folder}%' and tags.`{ROLE_TAG}` = 'sweep'"
                )
                if folder in run.data.tags.get(SWEEP_DIRS_TAG, "").split(",")
            ]
        if not parents:
            raise ReportError(f"no sweep run for folder {folder} in {tracking_uri} (is it a multirun folder?).")
    else:
        name = experiment or "regionaldiff"
        exp = client.get_experiment_by_name(name)
        if exp is None:
            known = ", ".join(sorted(e.name for e in experiments)) or "none"
            raise ReportError(f"no MLflow experiment {name!r} in {tracking_uri} (experiments: {known}).")
        parents = client.search_runs(
            [exp.experiment_id], f"tags.`{ROLE_TAG}` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1
        )
        if not parents:
            raise ReportError(f"no sweep in experiment {name!r}: run one with `regionaldiff -m ...` first.")
    finished: list[Any] = []
    unfinished: list[Any] = []
    for parent in parents:
        children = client.search_runs(
            [parent.info.experiment_id],
            f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
            max_results=5000,
            order_by=["attributes.start_time ASC"],
        )
        if not children:
            raise ReportError(
                f"run {parent.info.run_id} ({parent.info.run_name}) has no child runs: an empty sweep, or not a sweep's "
                "parent run."
            )
        # a job run again (a rerun of the sweep) counts once: its latest attempt
        for child in latest_attempts(children).values():
            (finished if child.info.status == "FINISHED" else unfinished).append(child)
    return Sweep(tracking_uri, [p.info.run_id for p in parents], finished, unfinished, client)


def swept_keys(runs: list[Any]) -> list[str]:
    """Override keys whose values differ between runs, in the order they first appear."""
    values: dict[str, set[str]] = defaultdict(set)
    order: list[str] = []
    for run in runs:
        for key, value in run_overrides(run).items():
            if key not in values:
                order.append(key)
            values[key].add(value)
    return [k for k in order if len(values[k]) > 1]


def group_runs(sweep: Sweep, spec: ReportSpec) -> tuple[RunsByVariant, dict[str, dict[str, str]], list[str]]:
    """``variant -> repeat -> metrics`` of the finished runs (the repeat: the value of ``spec.pair_by``, the seed by
    default), each variant's key values, and the grouping keys."""
    repeat_keys = {"seed", spec.pair_by}
    keys = (
        spec.group_by if spec.group_by is not None else [k for k in swept_keys(sweep.finished) if k not in repeat_keys]
    )
    grouped: RunsByVariant = defaultdict(dict)
    values_of: dict[str, dict[str, str]] = {}
    for run in sweep.finished:
        overrides = run_overrides(run)
        values = {k: overrides.get(k, run.data.params.get(k, "?")) for k in keys}
        variant = _label(values) if keys else "all"
        seed = repeat_of(run, overrides, spec.pair_by)
        if seed in grouped[variant]:
            raise ReportError(
                f"{spec.variant_label} {variant!r}, {spec.pair_by} {seed} is in more than one run of the sweeps "
                f"{sweep.parent_ids} (name sweeps that do not overlap, or set report.group_by / report.pair_by)."
            )
        grouped[variant][seed] = dict(run.data.metrics)
        values_of[variant] = values
    return dict(grouped), values_of, keys


def repeat_of(run: Any, overrides: dict[str, str], pair_by: str) -> Any:
    """The run's value of ``pair_by`` (an override, else its logged param; the seed defaults to 0): an int where
    it is one, so that repeats sort numerically."""
    value = overrides.get(pair_by, run.data.params.get(pair_by))
    if value is None:
        if pair_by != "seed":
            raise ReportError(
                f"run {run.info.run_id} ({run.info.run_name}) has no override or param {pair_by!r}, the report's "
                "pair_by key: set report.pair_by to a key every job of the sweep has (the default: seed)."
            )
        value = "0"
    try:
        return int(value)
    except ValueError:
        return str(value)


def spec_from_runs(sweep: Sweep) -> ReportSpec:
    """The ``report:`` section of a child run's logged config (``config_resolved.yaml``), else the default spec
    (any sweep: grouped by the overrides that vary, every metric tabulated, no claims)."""
    import tempfile

    from omegaconf import OmegaConf

    for run in sweep.finished[:1]:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = sweep.client.download_artifacts(run.info.run_id, "config_resolved.yaml", tmp)
                loaded = OmegaConf.to_container(OmegaConf.load(local), resolve=False)
        except Exception:  # noqa: BLE001 - no logged config: the default spec
            continue
        section = loaded.get("report") if isinstance(loaded, dict) else None
        # a job's config is not a spec: only its report: section is (experiments that have one)
        return ReportSpec.from_mapping(section) if isinstance(section, dict) else ReportSpec()
    return ReportSpec()


def default_metrics(runs: list[Any]) -> list[str]:
    """Every ``eval/...`` metric of the runs; when there is none (a sweep of the first steps only), every metric
    they logged except the system ones (``system/...``)."""
    names = {m for r in runs for m in r.data.metrics}
    evals = sorted(m for m in names if m.startswith("eval/"))
    return evals or sorted(m for m in names if not m.startswith("system/"))


# -- the report -------------------------------------------------------------------------------------------------
@dataclass
class Report:
    markdown: str
    files: list[Path]
    verdicts: list[tuple[Claim, bool | None]]
    parent_ids: list[str]


def setup_line(params: dict[str, str], keys: list[str]) -> str:
    found = [f"{k}={params[k]}" for k in keys if k in params]
    return "Setup (from the runs' params): " + ", ".join(found) + "." if found else ""


def build_report(
    sweep: Sweep, spec: ReportSpec, out_dir: Path, name: str = "report", note: str = "", log_artifacts: bool = True
) -> Report:
    """Write ``<name>.md``, ``<name>.csv``, ``<name>.png`` (and ``<name>_subjects.png``) into ``out_dir``; log them
    to the parent run(s) under ``report/``."""
    if not sweep.finished:
        failed = "; ".join(f"{r.info.run_name} ({r.info.status})" for r in sweep.unfinished)
        raise ReportError(f"no finished job in sweep(s) {sweep.parent_ids}: {failed}")
    runs, variants, keys = group_runs(sweep, spec)
    metrics = list(spec.metrics) or default_metrics(sweep.finished)
    table = summarise(runs, metrics)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(table, spec, metrics, out_dir / f"{name}.csv")
    panels = [m for m in (spec.plots or metrics[:3]) if any(m in r.data.metrics for r in sweep.finished)]
    files = [csv_path]
    figure = None
    if panels:
        figure = plot(runs, out_dir / f"{name}.png", spec, panels)
        files.append(figure)
    subject_key = next((k for k in keys if names_subjects(k)), None)
    if subject_key and panels:
        files.append(plot_subjects(runs, variants, subject_key, out_dir / f"{name}_subjects.png", spec, panels))
    claims, verdicts = claims_markdown(runs, spec)
    params = dict(sweep.finished[0].data.params)
    grouped_by = ", ".join(f"`{k}`" for k in keys) or "nothing (one variant)"
    command = f"`{spec.command}` then " if spec.command else ""
    text = (
        f"# {spec.title}\n\n"
        f"Produced by {command}`regionaldiff report` (MLflow sweep runs {', '.join(f'`{s}`' for s in sweep.parent_ids)}; "
        f"variants grouped by {grouped_by}). Mean ± sample standard deviation over {spec.repeats}.\n\n"
        f"{to_markdown(table, spec, metrics)}\n\n"
    )
    line = setup_line(params, spec.setup_keys)
    if line:
        text += f"{line}\n\n"
    if figure is not None:
        text += f"![{name}]({figure.name})\n\n"
    if spec.claims:
        text += (
            "## Paired comparisons\n\n"
            f"All arms of one {spec.repeat} share the dataset and its test scenes, so each claim is tested on the "
            f"per-{spec.repeat} differences A - B: mean ± std over {spec.repeats}, the one-sided 95% lower confidence bound (Student t), and the "
            "one-sided p-value. A claim is shown when the lower bound clears the threshold.\n\n"
            f"{claims}\n"
        )
    if sweep.unfinished:
        rows = "\n".join(
            f"| {r.info.run_name} | {r.info.status} | `{r.data.tags.get('regionaldiff.overrides', r.data.tags.get('overrides', ''))}` "
            f"| {r.data.tags.get('regionaldiff.failure', '').replace('|', '/')} | `{r.info.run_id}` |"
            for r in sweep.unfinished
        )
        text += (
            f"\n## Jobs not in the table\n\n{len(sweep.unfinished)} job(s) of the sweep did not finish "
            f"({len(sweep.finished)} did):\n\n| job | status | overrides | reason | run |\n"
            f"| --- | --- | --- | --- | --- |\n{rows}\n"
        )
    if note:
        text += f"\n{note.rstrip()}\n"
    md_path = out_dir / f"{name}.md"
    md_path.write_text(text)
    files.insert(0, md_path)
    if log_artifacts:
        for parent_id in sweep.parent_ids:
            for path in files:
                sweep.client.log_artifact(parent_id, str(path), "report")
    return Report(text, files, verdicts, sweep.parent_ids)


USAGE_EPILOG = """examples:
  regionaldiff report --experiment ablation_regions                 # the latest sweep of an experiment
  regionaldiff report --run-id PARENT_RUN_ID [--run-id ANOTHER]      # one sweep, or several merged
  regionaldiff report --sweep-dir outputs/multiruns/2026-11-25_10-00-00
  regionaldiff report --experiment ablation_regions --out docs/results --name ablation --note-file NOTES.md
"""
