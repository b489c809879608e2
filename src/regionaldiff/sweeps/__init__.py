"""Sweeps (``regionaldiff -m ...``, or an experiment config with ``hydra.mode: MULTIRUN``): everything a sweep does
beyond running its jobs' pipelines, in one place (docs/sweeps.md).

==========================================  =====================================================================
module                                      what it does
==========================================  =====================================================================
:mod:`regionaldiff.sweeps.plan`             the jobs of a sweep, its identity, and the check before launching that
                                            every job can start (exit 2 before anything runs)
:mod:`regionaldiff.sweeps.callback`         the Hydra callback: the check, the MLflow parent run (resumed on a
                                            rerun), threads split between parallel jobs, the end of the sweep and
                                            its exit status
:mod:`regionaldiff.sweeps.job`              one job: reused when it finished before, else run; a failure ends this
                                            job only (its run FAILED with a one-line reason)
:mod:`regionaldiff.sweeps.summary`          the jobs' status files, their outcomes, the summary table and the end
                                            of the parent run
==========================================  =====================================================================

They share no module state: a job's tracker is handed back to it explicitly, and the sweep's outcome is held by
its callback (:attr:`regionaldiff.sweeps.callback.SweepCallback.outcome`).
"""
