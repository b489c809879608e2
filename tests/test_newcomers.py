"""docs/extending.md is true for each kind of addition: one newcomer of each kind (encoder, region-map generator,
dataset, metric, conditioner, an ``ldm`` key) is added to a copy of the project, touching exactly the files the
recipe's "Files:" line lists, and nothing else changes; then the project's own contract, registry, config and
layering tests run on the copy and pass with the newcomers in them (each newcomer's tests are checked to have run).

The copy is imported from its own ``src/`` (``PYTHONPATH``), and reads its own ``conf/`` (``config_dir`` is found
from the package), so the newcomers never touch this checkout.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXTENDING = REPO / "docs" / "extending.md"
#: what the copy needs: the package, its configs, the tests and the docs the tests read
COPIED = ("src", "conf", "tests", "docs", "pyproject.toml")


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def _append(root: Path, rel: str, text: str) -> None:
    path = root / rel
    assert path.is_file(), f"{rel} is not in the project: the recipe names a file that does not exist"
    path.write_text(path.read_text() + "\n" + textwrap.dedent(text))


def _insert_after(root: Path, rel: str, anchor: str, text: str, indent: str = "") -> None:
    """``text`` (dedented, then indented by ``indent``) inserted after the one occurrence of ``anchor`` in ``rel``:
    a newcomer's edit inside an existing file."""
    path = root / rel
    source = path.read_text()
    assert source.count(anchor) == 1, f"{rel}: expected one {anchor!r}"
    path.write_text(source.replace(anchor, anchor + textwrap.indent(textwrap.dedent(text), indent), 1))


# -- the newcomers: what a researcher following docs/extending.md writes ----------------------------------------------
def add_conditioner(root: Path) -> None:
    _write(
        root,
        "src/regionaldiff/ldm/mean_token.py",
        '''
        """A newcomer's conditioner: the trial's mean code, projected, plus a learned embedding per token."""

        import torch
        from torch import nn


        class MeanTokenConditioner(nn.Module):
            def __init__(self, code_len, code_dim, num_classes, cross_attention_dim, n_tokens=4):
                super().__init__()
                self.n_tokens = n_tokens
                self.proj = nn.Linear(code_dim, cross_attention_dim)
                self.tokens = nn.Parameter(torch.randn(n_tokens, cross_attention_dim) * 0.02)

            def forward(self, codes, class_logits):
                return self.proj(codes.mean(1))[:, None, :] + self.tokens
        ''',
    )
    _write(
        root,
        "conf/ldm/conditioner/mean_token.yaml",
        """
        _target_: regionaldiff.ldm.mean_token.MeanTokenConditioner
        n_tokens: 4
        """,
    )
    _write(
        root,
        "tests/test_mean_token.py",
        """
        import torch

        from regionaldiff.ldm.mean_token import MeanTokenConditioner


        def test_mean_token_context_is_the_projected_mean_code_plus_the_token_embedding():
            conditioner = MeanTokenConditioner(code_len=5, code_dim=6, num_classes=3, cross_attention_dim=8)
            codes = torch.randn(2, 5, 6)
            context = conditioner(codes, torch.zeros(2, 3))
            expected = conditioner.proj(codes.mean(1))[:, None] + conditioner.tokens
            torch.testing.assert_close(context, expected)
        """,
    )


def add_map_generator(root: Path) -> None:
    _write(
        root,
        "src/regionaldiff/maps/brightness.py",
        '''
        """A newcomer's region-map generator: pixels far from the image's median grey are the object."""

        import numpy as np

        from regionaldiff.maps.base import RegionMapGenerator


        class BrightnessRegionMap(RegionMapGenerator):
            name = "brightness"

            def __init__(self, threshold=40.0):
                self.threshold = float(threshold)

            def segment(self, image, label):
                grey = np.asarray(image, dtype=np.float64).mean(-1)
                mask = np.abs(grey - np.median(grey)) > self.threshold
                return np.where(mask, label + 1, 0).astype(np.int64)

            def config(self):
                return {"name": self.name, "threshold": self.threshold}
        ''',
    )
    _write(
        root,
        "conf/regionmap/brightness.yaml",
        """
        _target_: regionaldiff.maps.brightness.BrightnessRegionMap
        threshold: 40.0
        """,
    )
    _write(
        root,
        "tests/test_brightness.py",
        """
        import numpy as np

        from regionaldiff.maps.brightness import BrightnessRegionMap


        def test_a_bright_square_on_grey_is_the_object():
            image = np.full((16, 16, 3), 120, dtype=np.uint8)
            image[4:8, 2:9] = 250
            label_map = BrightnessRegionMap(threshold=40).segment(image, label=2)
            expected = np.zeros((16, 16), dtype=np.int64)
            expected[4:8, 2:9] = 3
            np.testing.assert_array_equal(label_map, expected)
        """,
    )


def add_encoder(root: Path) -> None:
    from test_contracts import MeanPoolEncoder  # the contract tests' newcomer encoder, as a module of its own

    source = inspect.getsource(MeanPoolEncoder)
    header = '"""A newcomer\'s encoder."""\n\nimport torch\n\nfrom regionaldiff.encoder.base import EEGEncoder\n\n\n'
    (root / "src/regionaldiff/encoder/meanpool.py").write_text(header + source)
    _write(
        root,
        "conf/encoder/meanpool.yaml",
        """
        defaults:
          - schema
          - recipe: field
          - align: null
          - _self_

        net:
          _target_: regionaldiff.encoder.meanpool.MeanPoolEncoder
          window: 8
          grid: 4
        w_mae: 1.0
        w_cls: 1.0
        w_region: 1.0
        calibrate_background: true
        """,
    )


def add_recipe(root: Path) -> None:
    _write(
        root,
        "conf/encoder/recipe/short_noisy.yaml",
        """
        # @package encoder
        # the field's recipe, shorter, with Gaussian noise on every training batch
        defaults:
          - field
          - _self_

        max_epochs: 7
        augment:
          noise:
            _target_: braindecode.augmentation.GaussianNoise
            probability: 1.0
            std: 0.1
        """,
    )


def add_dataset(root: Path) -> None:
    _write(
        root,
        "src/regionaldiff/data/toy_npz.py",
        '''
        """A newcomer's dataset: one released file, toy.npz (eeg, labels, split, image_index, images, class_names,
        sfreq)."""

        from pathlib import Path

        import numpy as np

        from regionaldiff.data.base import EEGDataModule, EEGSplit
        from regionaldiff.errors import DataFormatError, MissingFileError


        class ToyNpzDataModule(EEGDataModule):
            name = "toy_npz"

            def __init__(self, root, batch_size=32, num_workers=0, image_size=16):
                super().__init__(batch_size, num_workers, image_size, region_labels="class")
                path = Path(root) / "toy.npz"
                if not path.is_file():
                    raise MissingFileError(f"{path} is missing: set dataset.root to the folder with toy.npz.")
                with np.load(path, allow_pickle=False) as released:
                    self.arrays = {key: released[key] for key in released.files}
                eeg = self.arrays["eeg"]
                if eeg.ndim != 3:
                    raise DataFormatError(f"{path}: eeg must be [trials, channels, samples]; got {eeg.shape}.")
                self.n_chans, self.n_times = int(eeg.shape[1]), int(eeg.shape[2])
                self.sfreq = float(self.arrays["sfreq"])
                self.ch_names = [f"E{i + 1}" for i in range(self.n_chans)]
                self.class_names = [str(name) for name in self.arrays["class_names"]]
                self.num_classes = len(self.class_names)

            def build_split(self, split):
                rows = np.flatnonzero(self.arrays["split"] == split)
                index = self.arrays["image_index"][rows]
                return EEGSplit(
                    eeg=self.arrays["eeg"][rows].astype(np.float32),
                    labels=self.arrays["labels"][rows].astype(np.int64),
                    image_ids=[f"toy{i}" for i in index],
                    subjects=np.ones(len(rows), dtype=np.int64),
                    images={f"toy{i}": self.arrays["images"][i] for i in np.unique(index)},
                )
        ''',
    )
    _write(
        root,
        "conf/dataset/toy_npz.yaml",
        """
        _target_: regionaldiff.data.toy_npz.ToyNpzDataModule
        root: ${paths.data_dir}/toy
        image_size: 16
        batch_size: 32
        num_workers: 0
        """,
    )
    _append(
        root,
        "tests/official_formats.py",
        '''
        def write_toy_npz(root: Path, n_trials: int = 18, n_chans: int = 4, n_times: int = 24) -> Path:
            """toy.npz as released: 3 classes, 6 images, trials split 12 / 3 / 3."""
            rng = np.random.default_rng(0)
            root.mkdir(parents=True, exist_ok=True)
            image_index = np.arange(n_trials) % 6
            np.savez(
                root / "toy.npz",
                eeg=rng.standard_normal((n_trials, n_chans, n_times)).astype(np.float32),
                labels=(image_index % 3).astype(np.int64),
                split=np.array(["train"] * 12 + ["val"] * 3 + ["test"] * 3),
                image_index=image_index,
                images=rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8),
                class_names=np.array(["cat", "cup", "car"]),
                sfreq=np.array(100.0),
            )
            return root
        ''',
    )
    contracts = "tests/test_contracts.py"
    _insert_after(
        root,
        contracts,
        "return [f\"dataset.root={write_eeg_imagenet(tmp_path / 'eeg_imagenet').root}\"]\n",
        """\


        def _toy_npz_root(tmp_path: Path) -> list[str]:
            from official_formats import write_toy_npz

            return [f"dataset.root={write_toy_npz(tmp_path / 'toy')}"]
        """,
    )
    _insert_after(root, contracts, '    "eeg_imagenet": _eeg_imagenet_root,\n', '"toy_npz": _toy_npz_root,\n', "    ")


def add_metric(root: Path) -> None:
    _append(
        root,
        "src/regionaldiff/evaluation/registry.py",
        '''
        def _brightness_gap(names, inputs):
            """Mean absolute difference of mean brightness, reconstruction vs seen image, in [0, 1]."""
            generated = inputs.generated.astype(np.float64).mean(axis=(2, 3, 4))  # [N, S]
            reference = inputs.reference.astype(np.float64).mean(axis=(1, 2, 3))[:, None]
            return {"eval/brightness_gap": float(np.abs(generated - reference).mean() / 255)}, {}


        METRICS["brightness_gap"] = Metric("brightness_gap", "eval/brightness_gap (mean |brightness difference|)",
                                           _brightness_gap)
        ''',
    )
    _append(
        root,
        "docs/metrics.md",
        """
        ### `brightness_gap` -> `eval/brightness_gap`

        The mean absolute difference of mean brightness between each reconstruction and its seen image, in [0, 1].
        """,
    )
    _append(
        root,
        "tests/test_eval_arithmetic.py",
        """
        def test_brightness_gap_by_hand():
            from regionaldiff.evaluation.suite import evaluate_images

            reference = np.zeros((2, 4, 4, 3), dtype=np.uint8)
            reference[1] = 51
            generated = np.full((2, 1, 4, 4, 3), 102, dtype=np.uint8)
            result = evaluate_images(generated, reference, cfg={"metrics": ["brightness_gap"]})
            assert result.metrics["eval/brightness_gap"] == pytest.approx((102 + 51) / 2 / 255)
        """,
    )


def add_ldm_key(root: Path) -> None:
    config = "src/regionaldiff/config.py"
    _insert_after(
        root,
        config,
        "    controlnet_scale: float = MISSING\n",
        """\
            # scale of the initial noise latents (1 = as trained)
            init_noise_scale: float = MISSING
        """,
        indent="    ",
    )
    _insert_after(root, config, "LDM_KEYS_ADDED: dict[str, Any] = {", '"sampling.init_noise_scale": 1.0, ')
    _insert_after(root, "conf/ldm/global.yaml", "\nsampling:\n", "init_noise_scale: 1.0\n", "  ")
    _write(
        root,
        "tests/test_init_noise_scale.py",
        """
        import pytest

        from regionaldiff.config import compose_config, config_dir
        from regionaldiff.errors import ConfigError
        from regionaldiff.reconstruction import ldm_config_from_dict, sampling_from_dict
        from regionaldiff.validation import validate

        LDM_OPTIONS = sorted(p.stem for p in (config_dir() / "ldm").glob("*.yaml"))


        @pytest.mark.parametrize("option", LDM_OPTIONS)
        def test_every_ldm_option_has_init_noise_scale_from_global(compose_cfg, option):
            typed = validate(compose_cfg(f"ldm={option}"))
            assert typed.ldm.sampling.init_noise_scale == 1.0


        def test_init_noise_scale_is_typed():
            with pytest.raises(ConfigError, match="init_noise_scale"):
                compose_config(["ldm.sampling.init_noise_scale=loud"])


        def test_a_model_saved_before_init_noise_scale_loads_with_the_value_it_used(compose_cfg):
            from omegaconf import OmegaConf

            saved = OmegaConf.to_container(compose_cfg("ldm=regional").ldm, resolve=True)
            del saved["sampling"]["init_noise_scale"]
            assert ldm_config_from_dict(saved).sampling.init_noise_scale == 1.0
            assert sampling_from_dict(saved["sampling"]).init_noise_scale == 1.0
        """,
    )


@dataclass(frozen=True)
class Newcomer:
    heading: str  # the recipe's bold heading in docs/extending.md
    name: str  # what <name> stands for
    add: Callable[[Path], None]
    test_ids: tuple[str, ...]  # substrings of test ids that must have run and passed on the copy


NEWCOMERS = {
    "conditioner": Newcomer(
        "**A conditioner**",
        "mean_token",
        add_conditioner,
        (
            "test_every_conditioner_option_maps_codes_to_a_context_that_learns[mean_token]",
            "test_option_composes_and_validates[ldm/conditioner=mean_token]",
            "test_mean_token_context",
        ),
    ),
    "map generator": Newcomer(
        "**A region-map generator**",
        "brightness",
        add_map_generator,
        (
            "test_every_regionmap_option_gives_a_label_map_per_stimulus[brightness]",
            "test_option_composes_and_validates[regionmap=brightness]",
            "test_a_bright_square",
        ),
    ),
    "encoder": Newcomer(
        "**An EEG encoder**",
        "meanpool",
        add_encoder,
        (
            "test_every_encoder_option_keeps_the_encoder_contract[0-meanpool]",
            "test_option_composes_and_validates[encoder=meanpool]",
        ),
    ),
    "encoder recipe": Newcomer(
        "**An encoder training recipe**",
        "short_noisy",
        add_recipe,
        ("test_option_composes_and_validates[encoder/recipe=short_noisy]",),
    ),
    "dataset": Newcomer(
        "**A dataset**",
        "toy_npz",
        add_dataset,
        (
            "test_every_dataset_option_keeps_the_data_contract[toy_npz]",
            "test_option_composes_and_validates[dataset=toy_npz]",
            "test_every_dataset_option_has_a_tiny_recipe",
        ),
    ),
    "metric": Newcomer(
        "**A metric**",
        "brightness_gap",
        add_metric,
        ("test_every_metric_is_declared_whole[brightness_gap]", "test_brightness_gap_by_hand"),
    ),
    "ldm key": Newcomer(
        "**An `ldm` key**",
        "init_noise_scale",
        add_ldm_key,
        ("test_every_ldm_option_has_init_noise_scale_from_global[sd15_regional]", "test_a_model_saved_before"),
    ),
}


def recipe_files(heading: str, name: str, doc: str | None = None) -> set[str]:
    """The paths of the "Files:" sentence that ends the recipe under ``heading``, ``<name>`` filled in."""
    text = EXTENDING.read_text() if doc is None else doc
    start = text.find(heading)
    assert start >= 0, f"docs/extending.md has no recipe {heading}"
    paragraph = text[start:].split("\n\n")[0]
    assert "Files" in paragraph, f"the recipe {heading} in docs/extending.md lists no files"
    listed = paragraph[paragraph.rindex("Files") :]
    return {path.replace("<name>", name) for path in re.findall(r"`([^`]+)`", listed)}


def _snapshot(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


def copy_project(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache")
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)
    return dest


def test_the_recipes_are_read_from_the_doc():
    doc = "**A thing**: text `not/a/file.py` here. Files: `src/<name>.py`, `conf/x/<name>.yaml`.\n\nnext"
    assert recipe_files("**A thing**", "foo", doc) == {"src/foo.py", "conf/x/foo.yaml"}
    with pytest.raises(AssertionError, match="lists no files"):
        recipe_files("**A thing**", "foo", "**A thing**: no list.\n")


def test_each_kind_of_addition_touches_only_the_files_extending_md_lists(tmp_path):
    root = copy_project(tmp_path / "project")
    state = _snapshot(root)
    for kind, newcomer in NEWCOMERS.items():
        newcomer.add(root)
        now = _snapshot(root)
        assert _changed(state, now) == recipe_files(newcomer.heading, newcomer.name), kind
        state = now

    # the newcomers work with only those files: the project's own tests pick them up on the copy
    junit = tmp_path / "junit.xml"
    names = " or ".join(sorted({n.name for n in NEWCOMERS.values()}))
    selection = f"{names} or recipe or declared_whole or layering or cycle or lower_layers or base_modules"
    tests = [
        "tests/test_contracts.py",
        "tests/test_config_groups.py",
        "tests/test_metric_registry.py",
        "tests/test_layering.py",
        "tests/test_eval_arithmetic.py",
        "tests/test_mean_token.py",
        "tests/test_brightness.py",
        "tests/test_init_noise_scale.py",
    ]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    env.pop("REGIONALDIFF_CONFIG_DIR", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            "-k",
            selection,
            *tests,
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed = [
        case.get("name", "")
        for case in ET.parse(junit).iter("testcase")
        if not any(child.tag in ("failure", "error", "skipped") for child in case)
    ]
    for kind, newcomer in NEWCOMERS.items():
        for test_id in newcomer.test_ids:
            assert any(test_id in name for name in passed), f"{kind}: no passing test {test_id!r} on the copy"
