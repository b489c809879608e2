"""The memory-mapped array cache: reuse, invalidation, atomic builds."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from regionaldiff.data.cache import ArrayCache


def fill_with(value, calls):
    def fill(writer):
        calls.append(value)
        out = writer.create("x", (4, 3), np.float32)
        out[:] = value
        writer.save("empty", np.zeros((0, 3)))
        return {"value": value}

    return fill


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "source.bin"
    path.write_bytes(os.urandom(5 * (1 << 20)))  # 5 MiB: the three 1 MiB samples leave gaps
    return path


def test_build_then_reuse(tmp_path, source):
    calls = []
    entry = ArrayCache(tmp_path / "c", "ds", {"a": 1}, {"eeg": source}).get_or_build(fill_with(1.0, calls))
    assert entry.status == "built" and isinstance(entry["x"], np.memmap) and not entry["x"].flags.writeable
    again = ArrayCache(tmp_path / "c", "ds", {"a": 1}, {"eeg": source}).get_or_build(fill_with(2.0, calls))
    assert again.status == "hit" and calls == [1.0] and float(again["x"][0, 0]) == 1.0
    assert again.meta == {"value": 1.0} and again["empty"].shape == (0, 3)
    manifest = json.loads((entry.path / "manifest.json").read_text())
    assert manifest["config"] == {"a": 1} and manifest["sources"]["eeg"]["size"] == source.stat().st_size
    # another config: another entry
    other = ArrayCache(tmp_path / "c", "ds", {"a": 2}, {"eeg": source}).get_or_build(fill_with(3.0, calls))
    assert other.status == "built" and other.path != entry.path


def test_changed_source_rebuilds(tmp_path, source):
    calls = []
    cache = lambda: ArrayCache(tmp_path / "c", "ds", {"a": 1}, {"eeg": source})  # noqa: E731
    cache().get_or_build(fill_with(1.0, calls))
    st = source.stat()
    # same size and mtime, content changed outside the sampled chunks: only a full check sees it
    with open(source, "r+b") as f:
        f.seek(1_500_000)
        f.write(b"changed!")
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache().load() is not None
    full = ArrayCache(tmp_path / "c", "ds", {"a": 1}, {"eeg": source}, verify="full")
    assert full.load() is None and "changed" in full.reason
    # a new mtime triggers the full hash even in quick mode
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c = cache()
    assert c.load() is None
    assert c.get_or_build(fill_with(2.0, calls)).status == "built" and calls == [1.0, 2.0]
    # touch only (content unchanged): reused after one full hash, and the manifest records the new mtime
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    entry = cache().load()
    assert entry is not None
    assert (
        json.loads((entry.path / "manifest.json").read_text())["sources"]["eeg"]["mtime_ns"]
        == st.st_mtime_ns + 5 * 10**9
    )
    # different size: rebuilt
    with open(source, "ab") as f:
        f.write(b"x")
    assert cache().load() is None


def test_interrupted_build_leaves_no_entry(tmp_path, source):
    def broken(writer):
        writer.create("x", (4, 3), np.float32)[:] = 7
        raise KeyboardInterrupt

    cache = ArrayCache(tmp_path / "c", "ds", {"a": 1}, {"eeg": source})
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_build(broken)
    assert not cache.path.exists() and not list(cache.root.glob(".*tmp*"))
    calls = []
    assert cache.get_or_build(fill_with(1.0, calls)).status == "built"
    # an interrupted rebuild keeps the previous complete entry
    os.utime(source, ns=(0, 10**9))
    with open(source, "r+b") as f:
        f.write(b"new header")
    with pytest.raises(KeyboardInterrupt):
        ArrayCache(tmp_path / "c", "ds", {"a": 1}, {"eeg": source}).get_or_build(broken)
    assert (cache.path / "manifest.json").is_file() and float(np.load(cache.path / "x.npy")[0, 0]) == 1.0


def test_broken_entry_is_rebuilt(tmp_path, source):
    calls = []
    cache = ArrayCache(tmp_path / "c", "ds", {"a": 1}, {"eeg": source})
    entry = cache.get_or_build(fill_with(1.0, calls))
    (entry.path / "x.npy").write_bytes(b"broken")
    assert cache.load() is None and "unreadable" in cache.reason
    assert cache.get_or_build(fill_with(1.0, calls)).status == "built"
    (cache.path / "manifest.json").write_text("{not json")
    assert cache.load() is None


def test_stat_sources(tmp_path):
    img = tmp_path / "a.jpg"
    cache = lambda: ArrayCache(tmp_path / "c", "img", {}, {}, stat_sources={"0": img})  # noqa: E731
    assert cache().get_or_build(fill_with(0.0, [])).status == "built"  # missing file is a valid state
    assert cache().load() is not None
    img.write_bytes(b"now here")
    assert cache().load() is None


def test_bad_verify(tmp_path):
    with pytest.raises(ValueError, match="cache_verify"):
        ArrayCache(tmp_path, "ds", {}, {}, verify="sometimes")
