"""Tests for functional_dl.checkpoint: bit-identical round trips, like-checks, corrupt and
truncated files, atomic replacement, and that nothing in a file can run code."""
import collections
import os
import subprocess
import sys
import zipfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import checkpoint
from functional_dl.checkpoint import CheckpointError


class AdamState(NamedTuple):
    count: jax.Array
    mu: dict
    nu: dict


def make_tree():
    """A training state with every supported leaf kind, including awkward values."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3, 4)).astype(np.float32)
    weights[0, 0] = np.nan  # a NaN payload must survive bit for bit
    weights[0, 1] = -0.0
    params = {"dense_0": {"w": jnp.asarray(weights), "b": jnp.zeros((4,), jnp.bfloat16)},
              "embed": jnp.asarray(rng.integers(-8, 8, size=(2, 2)), jnp.int8)}
    state = AdamState(count=jnp.asarray(7, jnp.int32),
                      mu=jax.tree.map(lambda p: p * 0.5, params),  # int8 * 0.5: weak f32
                      nu={"dense_0": {"w": jnp.full((3, 4), 0.25, jnp.float16), "b": None},
                          "embed": jnp.ones((2, 2), jnp.uint8)})
    return {
        "params": params,
        "opt_state": (state, ()),
        "step": 41,
        "learning_rate": 1e-3,
        "converged": False,
        "phase": 2j,
        "key": jax.random.key(5),
        "rbg_key": jax.random.key(6, impl="rbg"),
        "raw_key": jax.random.PRNGKey(7),
        "history": [np.arange(5, dtype=np.float32), np.float32(0.5), jnp.asarray(1.0)],
        "mask": jnp.asarray([True, False, True]),
        "empty": np.zeros((0, 3), np.int64),
        "complex": jnp.asarray([1 + 2j, -3j], jnp.complex64),
        "nothing": None,
        "by_layer": {0: jnp.zeros(1), 1: np.ones(1)},  # integer keys
    }


def leaf_record(leaf):
    """Type, dtype, shape and raw bytes of a leaf: what 'bit-identical' compares."""
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(leaf))
        return ("key", str(jax.random.key_impl(leaf)), data.dtype, data.shape, data.tobytes())
    if isinstance(leaf, (bool, int, float, complex)):
        return (type(leaf), leaf)
    array = np.asarray(leaf)
    weak = getattr(leaf, "weak_type", None)
    return (type(leaf), weak, array.dtype, array.shape, array.tobytes())


def assert_bit_identical(restored, original):
    assert jax.tree.structure(restored) == jax.tree.structure(original)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(original)):
        assert leaf_record(got) == leaf_record(want)


# --- round trips --------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_is_bit_identical_without_like(tmp_path, compress):
    tree = make_tree()
    path = checkpoint.save(tmp_path / "nested" / "state.npz", tree, compress=compress)
    assert path == tmp_path / "nested" / "state.npz"  # parent created, name used as given
    restored = checkpoint.restore(path)
    assert_bit_identical(restored, tree)
    assert type(restored["opt_state"][0]) is AdamState
    assert list(restored) == list(tree)  # dict order as saved


def test_round_trip_with_like_takes_like_types_and_sharding(tmp_path):
    tree = make_tree()
    checkpoint.save(tmp_path / "state.npz", tree)
    restored = checkpoint.restore(tmp_path / "state.npz", like=tree)
    assert_bit_identical(restored, tree)
    weights = restored["params"]["dense_0"]["w"]
    assert weights.sharding == tree["params"]["dense_0"]["w"].sharding
    # An abstract like (no memory) works too, dict order aside.
    abstract = jax.eval_shape(lambda: tree["params"])
    checkpoint.save(tmp_path / "params.npz", tree["params"])
    params = checkpoint.restore(tmp_path / "params.npz", like=abstract)
    assert_bit_identical(params, {k: tree["params"][k] for k in sorted(tree["params"])})


def test_restored_leaves_are_placed_as_likes_so_jit_reuses_its_program(tmp_path):
    """A fresh tree (uncommitted: jit may place it) restores uncommitted, a tree committed to a
    device restores committed to it, dtypes and weak types kept: a jitted function called on
    ``like`` and then on the restored tree runs one compiled program, not two."""
    fresh = {"w": jnp.arange(3.0), "half": jnp.arange(2) * 0.5,  # weakly typed float32
             "count": jnp.asarray(3, jnp.int32), "b": jnp.zeros(2, jnp.bfloat16),
             "key": jax.random.key(1)}
    pinned = jax.device_put(fresh, jax.devices()[0])
    checkpoint.save(tmp_path / "state.npz", fresh)
    for like in (fresh, pinned):
        restored = checkpoint.restore(tmp_path / "state.npz", like=like)
        assert_bit_identical(restored, fresh)
        for name in fresh:
            assert restored[name].committed == like[name].committed, name
            assert restored[name].sharding == like[name].sharding, name
        combine = jax.jit(lambda tree: (tree["w"] * tree["half"][0] + tree["count"],
                                       jax.random.key_data(tree["key"]),
                                       tree["b"].astype(jnp.float32)))
        combine(like)
        combine(restored)
        assert combine._cache_size() == 1


def test_like_converts_between_numpy_and_jax(tmp_path):
    checkpoint.save(tmp_path / "a.npz", {"x": np.arange(3.0, dtype=np.float32)})
    as_jax = checkpoint.restore(tmp_path / "a.npz", like={"x": jnp.zeros(3)})
    assert isinstance(as_jax["x"], jax.Array)
    checkpoint.save(tmp_path / "b.npz", {"x": jnp.arange(3.0)})
    as_numpy = checkpoint.restore(tmp_path / "b.npz", like={"x": np.zeros(3, np.float32)})
    assert type(as_numpy["x"]) is np.ndarray
    np.testing.assert_array_equal(as_numpy["x"], np.arange(3.0))


def test_float64_round_trip_and_x64_guard(tmp_path):
    with jax.enable_x64(True):
        tree = {"w": jnp.asarray([1.0 / 3.0, np.pi], jnp.float64), "n": jnp.int64(2 ** 40)}
        checkpoint.save(tmp_path / "f64.npz", tree)
        assert_bit_identical(checkpoint.restore(tmp_path / "f64.npz"), tree)
    with pytest.raises(CheckpointError, match="64-bit mode is off"):
        checkpoint.restore(tmp_path / "f64.npz")
    # NumPy float64 leaves need no x64.
    checkpoint.save(tmp_path / "np64.npz", {"w": np.asarray([1.0 / 3.0])})
    assert checkpoint.restore(tmp_path / "np64.npz")["w"].dtype == np.float64


def test_file_is_a_plain_npz_with_a_json_header(tmp_path):
    tree = {"w": jnp.arange(6, dtype=jnp.int32).reshape(2, 3), "b": jnp.ones(2, jnp.bfloat16)}
    checkpoint.save(tmp_path / "c.npz", tree)
    with np.load(tmp_path / "c.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == ["header", "leaf_0", "leaf_1"]
        np.testing.assert_array_equal(archive["leaf_0"], np.arange(6).reshape(2, 3))
        assert archive["leaf_1"].dtype == np.uint16  # bfloat16 bits
        np.testing.assert_array_equal(archive["leaf_1"], np.full(2, 0x3F80))  # bf16(1.0)
        assert b'"dtype": "bfloat16"' in archive["header"].tobytes()


# --- like mismatches ----------------------------------------------------------------------

class OtherState(NamedTuple):
    count: jax.Array
    mu: dict
    nu: dict


@pytest.mark.parametrize("change, where, what", [
    (lambda t: t.pop("step"), "at tree:", "keys only in the file [\'step\']"),
    (lambda t: t.update(extra=1), "at tree:", "keys only in like [\'extra\']"),
    (lambda t: t["history"].pop(), "at tree['history']", "3 entries, like has 2"),
    (lambda t: t.update(opt_state=(tuple(t["opt_state"][0]), ())),
     "at tree['opt_state'][0]", "namedtuple, like has a tuple"),
    (lambda t: t.update(opt_state=(OtherState(*t["opt_state"][0]), ())),
     "at tree['opt_state'][0]", "OtherState"),
    (lambda t: t["params"]["dense_0"].update(w=jnp.zeros((4, 3))),
     "at tree['params']['dense_0']['w']", "float32[3, 4], like has float32[4, 3]"),
    (lambda t: t["params"]["dense_0"].update(b=jnp.zeros(4, jnp.float32)),
     "at tree['params']['dense_0']['b']", "bfloat16[4], like has float32[4]"),
    (lambda t: t.update(key=jax.random.key(0, impl="rbg")), "at tree['key']",
     "typed PRNG key (key<fry>), like has a typed PRNG key (key<rbg>)"),
    (lambda t: t.update(raw_key=jax.random.key(0)), "at tree['raw_key']", "a JAX array"),
    (lambda t: t.update(key=jnp.zeros(2, jnp.uint32)), "at tree['key']", "typed PRNG key"),
    (lambda t: t.update(step=41.0), "at tree['step']", "Python int, like has a Python float"),
    (lambda t: t.update(step=jnp.asarray(41)), "at tree['step']", "Python int, like has an array"),
    (lambda t: t.update(nothing=jnp.zeros(1)), "at tree['nothing']", "none, like has a leaf"),
    (lambda t: t["by_layer"].pop(1), "at tree['by_layer']", "keys only in the file [1]"),
])
def test_like_mismatch_says_where_and_what(tmp_path, change, where, what):
    checkpoint.save(tmp_path / "state.npz", make_tree())
    like = make_tree()
    change(like)
    with pytest.raises(CheckpointError) as info:
        checkpoint.restore(tmp_path / "state.npz", like=like)
    message = str(info.value)
    assert "does not match like" in message and where in message and what in message, message


# --- NamedTuple classes and no code execution ---------------------------------------------

def test_unimported_namedtuple_class_is_not_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported.txt"
    (tmp_path / "ckpt_probe_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "import collections\nPoint = collections.namedtuple('Point', 'x y')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    point_class = collections.namedtuple("Point", "x y", module="ckpt_probe_module")
    checkpoint.save(tmp_path / "p.npz", {"p": point_class(jnp.ones(2), 3)})
    assert "ckpt_probe_module" not in sys.modules
    with pytest.warns(UserWarning, match="ckpt_probe_module:Point is not imported"):
        restored = checkpoint.restore(tmp_path / "p.npz")
    assert not marker.exists() and "ckpt_probe_module" not in sys.modules
    assert set(restored["p"]) == {"x", "y"} and restored["p"]["y"] == 3
    # With like, the class comes from like.
    again = checkpoint.restore(tmp_path / "p.npz", like={"p": point_class(jnp.zeros(2), 0)})
    assert type(again["p"]) is point_class and again["p"].y == 3


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    ran = []

    class Payload:
        def __reduce__(self):
            return (ran.append, ("code ran",))

    good = tmp_path / "good.npz"
    checkpoint.save(good, {"w": np.zeros(2, np.float32)})
    with np.load(good) as archive:
        header = archive["header"]
    crafted = tmp_path / "crafted.npz"
    np.savez(crafted, header=header, leaf_0=np.array([Payload()], dtype=object))
    with pytest.raises(CheckpointError, match="pickled"):
        checkpoint.restore(crafted)
    assert ran == []
    with pytest.raises(TypeError, match=r"tree\['w'\] has dtype object"):
        checkpoint.save(tmp_path / "o.npz", {"w": np.array([Payload()], dtype=object)})


# --- damaged files ------------------------------------------------------------------------

def test_truncated_files_raise_checkpoint_error(tmp_path):
    path = checkpoint.save(tmp_path / "state.npz", make_tree())
    data = path.read_bytes()
    for length in (0, 3, 30, len(data) // 3, len(data) // 2, len(data) - 22, len(data) - 1):
        damaged = tmp_path / f"cut_{length}.npz"
        damaged.write_bytes(data[:length])
        with pytest.raises(CheckpointError, match="truncated or corrupt|not a checkpoint"):
            checkpoint.restore(damaged)


def test_any_flipped_byte_raises_or_restores_identically(tmp_path):
    """Zip metadata such as timestamps is not checked (changing it is harmless); every
    byte that matters is covered by the zip CRC-32s and the header's SHA-256."""
    tree = {"w": jnp.arange(64, dtype=jnp.float32), "s": AdamState(jnp.int32(1), {}, {})}
    path = checkpoint.save(tmp_path / "state.npz", tree)
    data = path.read_bytes()
    damaged = tmp_path / "flipped.npz"
    raised = 0
    for position in range(0, len(data), 3):
        damaged.write_bytes(data[:position] + bytes([data[position] ^ 0x5A]) + data[position + 1:])
        try:
            restored = checkpoint.restore(damaged)
        except CheckpointError:
            raised += 1
            continue
        assert_bit_identical(restored, tree)
    assert raised > len(data) // 3 * 0.8


def test_corrupt_leaf_bytes_fail_the_checksum(tmp_path):
    """Rewrite a leaf with valid zip CRCs but other values: only the SHA-256 catches it."""
    path = checkpoint.save(tmp_path / "state.npz", {"w": jnp.arange(4.0)})
    with np.load(path) as archive:
        members = {name: archive[name] for name in archive.files}
    members["leaf_0"] = members["leaf_0"] + 1
    np.savez(path, **members)
    with pytest.raises(CheckpointError, match="checksum"):
        checkpoint.restore(path)


def test_foreign_and_missing_files(tmp_path):
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        checkpoint.restore(tmp_path / "array.npy")
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(CheckpointError, match="no header"):
        checkpoint.restore(tmp_path / "plain.npz")
    with zipfile.ZipFile(tmp_path / "junk.npz", "w") as archive:
        archive.writestr("header.npy", b"\x93NUMPY garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.restore(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        checkpoint.restore(tmp_path / "missing.npz")


# --- atomic writes ------------------------------------------------------------------------

def test_failed_save_keeps_previous_checkpoint_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.npz"
    checkpoint.save(path, {"w": jnp.zeros(1000)})
    before = path.read_bytes()

    def crash_midway(file, members, compress):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("power cut")

    monkeypatch.setattr(checkpoint._io, "_write_npz", crash_midway)
    with pytest.raises(RuntimeError, match="power cut"):
        checkpoint.save(path, {"w": jnp.ones(1000)})
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(OSError("no rename")))
    with pytest.raises(OSError, match="no rename"):
        checkpoint.save(path, {"w": jnp.ones(1000)})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["state.npz"] and path.read_bytes() == before
    np.testing.assert_array_equal(checkpoint.restore(path)["w"], np.zeros(1000))
    checkpoint.save(path, {"w": jnp.ones(1000)})  # and a good save replaces it
    np.testing.assert_array_equal(checkpoint.restore(path)["w"], np.ones(1000))
    assert os.listdir(tmp_path) == ["state.npz"]


def test_unsavable_trees_raise_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"tree\['f'\] is a builtins.str"):
        checkpoint.save(tmp_path / "x.npz", {"w": jnp.zeros(2), "f": "text"})
    with pytest.raises(TypeError, match="dict keys must be str or int"):
        checkpoint.save(tmp_path / "x.npz", {(1, 2): jnp.zeros(2)})
    with pytest.raises(TypeError, match="abstract"):
        jax.jit(lambda w: checkpoint.save(tmp_path / "x.npz", {"w": w}) and w)(jnp.zeros(2))
    assert not (tmp_path / "x.npz").exists()


# --- numbered checkpoints and resuming ----------------------------------------------------

def test_step_helpers(tmp_path):
    directory = tmp_path / "run"
    assert checkpoint.latest_step(directory) is None and checkpoint.list_steps(directory) == []
    with pytest.raises(FileNotFoundError):
        checkpoint.restore_step(directory)
    for step in (1, 2, 10, 3):
        checkpoint.save_step(directory, step, {"step": step}, keep=3)
    (directory / ".checkpoint_00000099.npz.abc.tmp").write_bytes(b"leftover")
    assert checkpoint.list_steps(directory) == [2, 3, 10]  # keep=3 dropped step 1
    assert checkpoint.latest_step(directory) == 10
    assert checkpoint.restore_step(directory) == {"step": 10}
    assert checkpoint.restore_step(directory, 2, like={"step": 0}) == {"step": 2}
    assert checkpoint.step_path(directory, 3).name == "checkpoint_00000003.npz"
    # a negative step is a wrong value; a float or a bool is the wrong kind
    for bad, error in (({"step": -1}, ValueError), ({"step": 1.5}, TypeError),
                       ({"step": True}, TypeError)):
        with pytest.raises(error, match="step must be an int >= 0"):
            checkpoint.step_path(directory, **bad)
    with pytest.raises(ValueError, match="keep must be an int >= 1"):
        checkpoint.save_step(directory, 11, {}, keep=0)


def test_stop_and_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    """Noisy SGD driven by a key: 6 steps straight equal 3 steps, save, restore, 3 steps."""
    @jax.jit
    def step(state):
        params, key, count = state["params"], state["key"], state["count"]
        key, noise_key = jax.random.split(key)
        noise = jax.random.normal(noise_key, params["w"].shape)
        grad = 2 * params["w"] + 0.1 * noise
        return {"params": {"w": params["w"] - 0.1 * grad}, "key": key, "count": count + 1}

    initial = {"params": {"w": jnp.arange(4.0)}, "key": jax.random.key(0),
               "count": jnp.asarray(0, jnp.int32)}
    straight = initial
    for _ in range(6):
        straight = step(straight)
    interrupted = initial
    for _ in range(3):
        interrupted = step(interrupted)
    checkpoint.save_step(tmp_path, 3, interrupted)
    resumed = checkpoint.restore_step(tmp_path, like=initial)
    for _ in range(3):
        resumed = step(resumed)
    assert_bit_identical(resumed, straight)


def test_restore_places_leaves_with_likes_sharding(tmp_path):
    """On 4 host devices: a batch-sharded and a replicated leaf come back sharded alike."""
    script = f"""
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from functional_dl import checkpoint
mesh = Mesh(np.array(jax.devices()), ("data",))
split = jax.device_put(jnp.arange(8.0).reshape(4, 2), NamedSharding(mesh, PartitionSpec("data")))
copied = jax.device_put(jnp.ones(3), NamedSharding(mesh, PartitionSpec()))
state = {{"split": split, "copied": copied}}
checkpoint.save({str(tmp_path / "s.npz")!r}, state)
like = {{"split": jnp.zeros((4, 2)), "copied": jnp.zeros(3)}}
like = jax.tree.map(lambda z, a: jax.device_put(z, a.sharding), like, state)
restored = checkpoint.restore({str(tmp_path / "s.npz")!r}, like=like)
for name in state:
    assert restored[name].sharding == state[name].sharding, name
    assert np.array_equal(restored[name], state[name]), name
assert len(restored["split"].addressable_shards) == 4
print("ok")
"""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint.__file__))))
    environment = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
                       JAX_PLATFORMS="cpu", PYTHONPATH=package_root)
    result = subprocess.run([sys.executable, "-c", script], env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_save_step_never_prunes_the_step_it_just_wrote(tmp_path):
    """Retraining into a directory that holds higher steps of an earlier run."""
    directory = tmp_path / "run"
    for step in (100, 200, 300):
        checkpoint.save_step(directory, step, {"step": step}, keep=2)
    assert checkpoint.list_steps(directory) == [200, 300]
    path = checkpoint.save_step(directory, 50, {"step": 50}, keep=2)
    assert path.exists() and checkpoint.list_steps(directory) == [50, 300]
    assert checkpoint.restore_step(directory, 50) == {"step": 50}
    checkpoint.save_step(directory, 60, {"step": 60}, keep=1)
    assert checkpoint.list_steps(directory) == [60]
