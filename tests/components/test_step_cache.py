"""The step cache's parts, called directly: content hashes, the key, the completion marker, and
the store (local and on a real S3 server), including what a flipped byte or a racing writer
does to them."""

import json
from pathlib import Path

import pytest

from components.common.step_cache import (
    ABSENT,
    CONTENT_HASH,
    CorruptInput,
    StepStore,
    check_input,
    content_hash,
    step_key,
)


def _flip_byte(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_content_hash_of_a_file_a_folder_and_nothing(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    folder = tmp_path / "d"
    (folder / "sub").mkdir(parents=True)
    (folder / "a").write_bytes(b"1")
    (folder / "sub" / "b").write_bytes(b"2")

    first = content_hash(folder)
    assert content_hash(tmp_path / "f") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    )
    assert content_hash(tmp_path / "missing") == ABSENT
    (folder / "sub" / "b").rename(folder / "b")  # same bytes under another name
    assert content_hash(folder) != first
    (folder / "b").rename(folder / "sub" / "b")
    assert content_hash(folder) == first
    _flip_byte(folder / "a")
    assert content_hash(folder) != first


def _key(**changes):
    ingredients = {
        "step": "prepare",
        "source": "def prepare(): ...",
        "image": "img:1",
        "code": "c0de",
        "libraries": {"scikit-learn": "1.9.1"},
        "parameters": {"split_config": {"seed": 42}, "run_id": "run-1"},
        "input_hashes": {"dataset": "aa"},
    }
    return step_key(**{**ingredients, **changes})


@pytest.mark.parametrize(
    "change",
    [
        {"step": "train"},
        {"source": "def prepare(): return 1"},
        {"image": "img:2"},
        {"code": "c0df"},
        {"libraries": {"scikit-learn": "1.9.2"}},
        {"parameters": {"split_config": {"seed": 7}, "run_id": "run-1"}},
        {"input_hashes": {"dataset": "ab"}},
    ],
)
def test_every_ingredient_of_the_key_changes_it(change):
    assert _key(**change) != _key()


def test_the_run_id_names_a_run_and_is_not_part_of_the_key():
    assert _key(parameters={"split_config": {"seed": 42}, "run_id": "run-2"}) == _key()


def test_an_input_without_its_completion_marker_is_refused(tmp_path):
    path = tmp_path / "dataset"
    path.write_bytes(b"half a parquet file")
    with pytest.raises(CorruptInput, match=r"input 'dataset' .* has no completion marker"):
        check_input("dataset", path, {"rows": 3})


def test_an_input_with_a_flipped_byte_is_refused(tmp_path):
    path = tmp_path / "model"
    path.write_bytes(b"pickled model bytes")
    marker = {CONTENT_HASH: content_hash(path)}
    assert check_input("model", path, marker) == marker[CONTENT_HASH]
    _flip_byte(path, 3)
    with pytest.raises(CorruptInput, match=r"input 'model' .* does not match its content hash"):
        check_input("model", path, marker)


def _outputs(tmp_path: Path) -> dict[str, tuple[str, dict]]:
    (tmp_path / "run" / "report").mkdir(parents=True)
    (tmp_path / "run" / "train").write_bytes(b"train rows")
    (tmp_path / "run" / "report" / "index.html").write_text("<p>report</p>")
    artifacts = {}
    for name in ("train", "report", "absent"):
        path = tmp_path / "run" / name
        artifacts[name] = (str(path), {"rows": 2, CONTENT_HASH: content_hash(path)})
    return artifacts


def _destinations(tmp_path: Path) -> dict[str, str]:
    return {name: str(tmp_path / "next" / name) for name in ("train", "report", "absent")}


def test_a_stored_step_is_restored_file_for_file(tmp_path):
    store = StepStore(tmp_path / "cache")
    artifacts = _outputs(tmp_path)
    assert store.put("k" * 64, "prepare", artifacts, {"train_rows": 2}, origin_run="r1")

    entry = store.get("k" * 64)
    assert entry["parameters"] == {"train_rows": 2} and entry["origin_run"] == "r1"
    destinations = _destinations(tmp_path)
    assert store.restore(entry, destinations)
    for name, (_path, metadata) in artifacts.items():
        assert content_hash(destinations[name]) == metadata[CONTENT_HASH]
        assert entry["artifacts"][name]["metadata"] == metadata
    assert not Path(destinations["absent"]).exists()
    assert store.get("other") is None


def test_a_flipped_byte_in_the_store_is_never_restored(tmp_path):
    store = StepStore(tmp_path / "cache")
    store.put("k" * 64, "prepare", _outputs(tmp_path), {}, origin_run="r1")
    entry = store.get("k" * 64)
    (stored,) = (tmp_path / "cache").glob("kk/" + "k" * 64 + "/*/train")
    # A copy, not the run's own file: the flip must be found in the store itself.
    stored.unlink()
    stored.write_bytes(b"train rowz")

    destinations = _destinations(tmp_path)
    assert not store.restore(entry, destinations)
    assert not any(Path(p).exists() for p in destinations.values())
    assert store.get("k" * 64) is None  # the bad entry is gone: the next run recomputes


def test_a_half_written_entry_is_a_miss_not_an_error(tmp_path):
    store = StepStore(tmp_path / "cache")
    store.put("k" * 64, "prepare", _outputs(tmp_path), {}, origin_run="r1")
    entry_file = next((tmp_path / "cache").glob("kk/*/entry.json"))
    entry_file.write_text(entry_file.read_text()[:40])
    assert store.get("k" * 64) is None


def test_the_first_of_two_writers_wins_and_the_second_leaves_nothing(tmp_path):
    store = StepStore(tmp_path / "cache")
    artifacts = _outputs(tmp_path)
    assert store.put("k" * 64, "prepare", artifacts, {"n": 1}, origin_run="first")
    assert not store.put("k" * 64, "prepare", artifacts, {"n": 2}, origin_run="second")
    key_dir = next((tmp_path / "cache").glob("kk/*"))
    writers = [p for p in key_dir.iterdir() if p.is_dir()]
    assert len(writers) == 1
    assert json.loads((key_dir / "entry.json").read_text())["origin_run"] == "first"


def test_a_write_that_fails_half_way_leaves_no_files(tmp_path):
    store = StepStore(tmp_path / "cache")
    artifacts = _outputs(tmp_path)
    artifacts["broken"] = (str(tmp_path / "run" / "gone"), {CONTENT_HASH: "feed"})
    with pytest.raises(OSError):
        store.put("k" * 64, "prepare", artifacts, {}, origin_run="r1")
    assert store.get("k" * 64) is None
    assert not list((tmp_path / "cache").rglob("*"))  # no files, and no empty key folder


def test_the_store_works_on_an_object_store(tmp_path, s3):
    s3.mkdir("step-cache")
    store = StepStore("s3://step-cache/steps")
    artifacts = _outputs(tmp_path)
    assert store.put("k" * 64, "prepare", artifacts, {"train_rows": 2}, origin_run="r1")
    assert not store.put("k" * 64, "prepare", artifacts, {}, origin_run="r2")

    entry = store.get("k" * 64)
    destinations = _destinations(tmp_path)
    assert entry["origin_run"] == "r1"
    assert store.restore(entry, destinations)
    assert Path(destinations["train"]).read_bytes() == b"train rows"
    assert (Path(destinations["report"]) / "index.html").read_text() == "<p>report</p>"
