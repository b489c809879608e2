from regionaldiff.artifacts import ArtifactStore, config_hash


def test_hash_ignores_key_order_and_sees_values():
    assert config_hash({"a": 1, "b": {"c": 2}}) == config_hash({"b": {"c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_slot_is_reused_for_the_same_key_and_marks_done(tmp_path):
    store = ArtifactStore(tmp_path)
    slot = store.slot("pretrain", {"encoder": {"depth": 2}})
    assert not slot.done and (slot.path / "key.json").is_file()
    slot.mark_done({"loss": 0.5})
    again = store.slot("pretrain", {"encoder": {"depth": 2}})
    assert again.path == slot.path and again.done
    other = store.slot("pretrain", {"encoder": {"depth": 3}})
    assert other.path != slot.path and not other.done


def test_a_checkpoint_cut_off_mid_write_is_set_aside_not_resumed(tmp_path):
    from regionaldiff.steps.training import resume_path as _resume_path

    slot = ArtifactStore(tmp_path).slot("pretrain", {"k": 1})
    assert _resume_path(slot) is None
    (slot.path / "checkpoints").mkdir()
    (slot.path / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    assert _resume_path(slot) is None
    assert (slot.path / "checkpoints" / "last.ckpt.broken").is_file()
    import torch

    torch.save({"epoch": 3}, slot.path / "checkpoints" / "last.ckpt")
    assert _resume_path(slot) == str(slot.path / "checkpoints" / "last.ckpt")


def test_keys_added_at_their_old_value_leave_artifact_keys_as_they_were(compose_cfg):
    """``encoder.subject_layer=none`` and the concept worlds' ``dataset.subjects=null``, ``subject_latency_jitter=0`` and
    ``subject_snr_spread=0`` build what was built before the keys existed: they are left out of the artifact keys, so
    those artifacts are still found; another value keys."""
    from regionaldiff.config import plain
    from regionaldiff.steps.context import artifact_key

    cfg = compose_cfg("dataset=synthetic_things")
    encoder, dataset = plain(cfg.encoder), plain(cfg.dataset)
    assert encoder["subject_layer"] == "none" and dataset["subjects"] is None
    assert artifact_key("encoder", encoder) == {k: v for k, v in encoder.items() if k != "subject_layer"}
    added = ("subjects", "subject_latency_jitter", "subject_snr_spread")
    assert dataset["subject_latency_jitter"] == dataset["subject_snr_spread"] == 0
    assert artifact_key("dataset", dataset) == {k: v for k, v in dataset.items() if k not in added}
    assert artifact_key("encoder", {**encoder, "subject_layer": "token"})["subject_layer"] == "token"
    assert artifact_key("dataset", {**dataset, "subjects": 0})["subjects"] == 0
    assert artifact_key("dataset", {**dataset, "subject_latency_jitter": 0.01})["subject_latency_jitter"] == 0.01
    assert artifact_key("dataset", {**dataset, "subject_snr_spread": 0.25})["subject_snr_spread"] == 0.25
