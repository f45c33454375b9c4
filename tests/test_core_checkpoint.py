"""Crash-safe checkpoints (mixlib.core.checkpoint): blocks whole or absent, the latest good state, fingerprints, on
local folders and fsspec URLs."""

import numpy as np
import pytest
import zarr

from mixlib.core import checkpoint


@pytest.mark.parametrize("where", ["local", "url"])
def test_block_checkpoint_keeps_complete_blocks_and_the_last_good_state(tmp_path, where):
    """A writer killed half-way leaves a group without its completion mark (under a temporary name; at a URL, under
    its final name): the latest state is the last complete one, the next save replaces a half group of its name, a
    pointer to an incomplete group is no state at all; a block saved first by another writer is kept; a resumed
    run keeps the blocks of its own fingerprint and refuses another one."""
    from upath import UPath

    folder = tmp_path / "ckpt" if where == "local" else UPath(f"memory://ckpt-{tmp_path.name}")
    store = checkpoint.BlockCheckpoint(folder, "fp", "other data")
    assert not store.start(resume=True)  # nothing recorded yet: a fresh start
    store.save_latest("step-000002", {"x": np.arange(3.0), "nested/y": np.array(["a", "b"])}, {"step": 2})
    half = store.folder / ("step-000004" if where == "url" else ".step-000004.999.tmp")
    zarr.open_group(checkpoint.zarr_store(half), mode="w").create_array("x", data=np.zeros(3))
    key, arrays, attrs = store.load_latest()
    assert (key, attrs) == ("step-000002", {"step": 2})
    assert list(arrays["x"]) == [0, 1, 2] and list(arrays["nested/y"]) == ["a", "b"]
    store.save_latest("step-000004", {"x": np.ones(2)}, {"step": 4})
    key, arrays, attrs = store.load_latest()
    assert attrs == {"step": 4} and list(arrays["x"]) == [1, 1] and store.keys() == ["step-000004"]
    checkpoint.point_to(store.folder, "step-000006")
    zarr.open_group(checkpoint.zarr_store(store.folder / "step-000006"), mode="w").create_array("x", data=np.ones(1))
    assert store.load_latest() is None
    cut_short = store.folder / "step-000008"  # killed while writing its zarr.json (in place, at a URL)
    cut_short.mkdir(parents=True, exist_ok=True)
    (cut_short / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gr')
    checkpoint.point_to(store.folder, "step-000008")
    assert store.load_latest() is None

    store.save("r0-c0", {"codes": np.arange(3)})
    store.save("r0-c0", {"codes": np.zeros(1)})  # the same block again (a task run twice): the first is kept
    assert list(store.load("r0-c0")[0]["codes"]) == [0, 1, 2] and store.load("r9-c9") is None
    assert store.start(resume=True) and store.load("r0-c0") is not None
    other = checkpoint.BlockCheckpoint(folder, {"another": "fingerprint"}, "other data")
    with pytest.raises(checkpoint.InputError, match="was made from other data"):
        other.check(resume=True, flag="--checkpoint-dir")
    other.check(resume=False, flag="--checkpoint-dir")
    assert not other.start(resume=False) and other.keys() == [] and other.load("r0-c0") is None
