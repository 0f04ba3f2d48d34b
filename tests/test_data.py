"""Tests for jaxlr.data: IDX validation, registry and lookup, loopback downloads, fake data
sets, preprocessing, splits, mini-batch indices, and the real MNIST / Fashion-MNIST files when
present."""

import functools
import gzip
import hashlib
import http.server
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.data import fake as jfake
from jaxlr.data import idx as jidx
from jaxlr.data import images as jimages
from jaxlr.data import registry as jregistry
from jaxlr.data import splits as jsplits
from jaxlr.engine import batches as jbatches

# ---------------------------------------------------------------------------------------------
# Helpers: tiny IDX files and a tiny registered data set.


def _gz(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


def _write(path, raw: bytes, compress: bool = True):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_gz(raw) if compress else raw)
    return path


def _tiny_arrays(seed=0, n_train=12, n_test=6, hw=4):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, hw, hw), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, hw, hw), dtype=np.uint8),
        "test_labels": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }


NAMES = dict(
    zip(
        jregistry.ROLES,
        (
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ),
        strict=True,
    )
)


def _tiny_spec(arrays, system_dirs=(), mirrors=("http://127.0.0.1:9/unused/",)):
    files = tuple(
        jregistry.FileSpec(
            role, NAMES[role], hashlib.sha256(jidx.encode_idx(a)).hexdigest(), a.shape
        )
        for role, a in arrays.items()
    )
    return jregistry.DatasetSpec("tiny", files, tuple(mirrors), 10, ("tiny",), tuple(system_dirs))


def _write_tiny(folder, arrays, roles=jregistry.ROLES):
    for role in roles:
        jidx.write_idx(folder / NAMES[role], arrays[role])
    return folder


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Isolated lookup environment: no data dir, a private cache, fast download timeout."""
    for var in ("JAXLR_DATA_DIR", "JAXLR_MIRRORS", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JAXLR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("JAXLR_DOWNLOAD_TIMEOUT", "2")
    jregistry.clear_cache()
    yield monkeypatch
    jregistry.clear_cache()


@pytest.fixture
def tiny(env, tmp_path):
    """Registers data set "tiny" (12 train + 6 test 4x4 images); its system folder is empty."""
    arrays = _tiny_arrays()
    spec = _tiny_spec(arrays, system_dirs=(str(tmp_path / "system"),))
    env.setitem(jregistry.DATASETS, "tiny", spec)
    return arrays


def _assert_loaded(ds, arrays):
    np.testing.assert_array_equal(ds.x_train, arrays["train_images"])
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(ds.x_test, arrays["test_images"])
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])


# ---------------------------------------------------------------------------------------------
# IDX reader.


@pytest.mark.parametrize("dtype", ["uint8", "int8", ">i2", ">i4", ">f4", ">f8", "<i4"])
@pytest.mark.parametrize("shape", [(5,), (3, 2, 4), (2, 1, 3, 2)])
def test_idx_roundtrip(tmp_path, dtype, shape):
    arr = (
        (np.arange(np.prod(shape)) * 7 - 5).astype(np.dtype(dtype).newbyteorder("=")).reshape(shape)
    )
    if dtype.startswith(("uint", ">f")):
        arr = np.abs(arr)
    raw = jidx.encode_idx(arr.astype(dtype))
    assert raw[:4] == bytes([0, 0, raw[2], len(shape)])
    for path, compress in ((tmp_path / "a.gz", True), (tmp_path / "a.idx", False)):
        out = jidx.read_idx(_write(path, raw, compress))
        np.testing.assert_array_equal(out, arr)
        assert out.shape == shape and out.dtype.isnative
        assert not out.flags.writeable


def test_idx_uint8_codes_match_mnist_header():
    raw = jidx.encode_idx(np.zeros((2, 28, 28), np.uint8))
    assert raw[:16].hex() == "00000803" + "00000002" + "0000001c" + "0000001c"


def _corrupt_cases():
    good = jidx.encode_idx(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    return {
        "truncated data": (good[:-1], "truncated: the header declares shape (2, 3, 4)"),
        "truncated header": (good[:10], "truncated: the header declares 3 dimensions"),
        "too short": (good[:3], "not an IDX file"),
        "empty": (b"", "not an IDX file"),
        "trailing bytes": (good + b"\x00\x01", "2 trailing bytes"),
        "wrong magic": (b"\x01" + good[1:], "wrong magic number 0x01000803"),
        "wrong magic 2nd byte": (b"\x00\x07" + good[2:], "wrong magic number"),
        "bad dtype code": (good[:2] + b"\x07" + good[3:], "unknown IDX dtype code 0x07"),
        "zero dims": (good[:3] + b"\x00", "declares 0 dimensions"),
        # Declares 2 dims, so the third size word becomes data: 8 bytes too many.
        "wrong number of dims": (good[:3] + b"\x02" + good[4:], "trailing bytes"),
    }


@pytest.mark.parametrize("case", list(_corrupt_cases()))
def test_idx_corrupt_file_raises_clear_error(tmp_path, case):
    raw, message = _corrupt_cases()[case]
    path = _write(tmp_path / "bad-idx3-ubyte.gz", raw)
    with pytest.raises(jidx.DataError, match=re.escape(message)) as err:
        jidx.read_idx(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_idx_not_gzip_and_corrupt_gzip(tmp_path):
    raw = jidx.encode_idx(np.zeros((4, 2, 2), np.uint8))
    path = _write(tmp_path / "plain.gz", raw, compress=False)
    with pytest.raises(jidx.DataError, match="not a gzip file") as err:
        jidx.read_idx(path)
    assert str(path) in str(err.value)
    cut = _write(tmp_path / "cut.gz", _gz(raw)[:-12], compress=False)
    with pytest.raises(jidx.DataError, match="corrupt or truncated gzip"):
        jidx.read_idx(cut)
    flipped = bytearray(_gz(raw))
    flipped[-6] ^= 0xFF  # damage the stored length/CRC
    with pytest.raises(jidx.DataError, match="corrupt or truncated gzip"):
        jidx.read_idx(_write(tmp_path / "crc.gz", bytes(flipped), compress=False))
    with pytest.raises(jidx.DataError, match="cannot read"):
        jidx.read_idx(tmp_path / "missing.gz")


def test_idx_checksum(tmp_path):
    raw = jidx.encode_idx(np.arange(10, dtype=np.uint8))
    path = _write(tmp_path / "l.gz", raw)
    ok = hashlib.sha256(raw).hexdigest()
    np.testing.assert_array_equal(jidx.read_idx(path, expected_sha256=ok), np.arange(10))
    with pytest.raises(jidx.DataError, match=f"expected {'0' * 64}.*was not used") as err:
        jidx.read_idx(path, expected_sha256="0" * 64)
    assert ok in str(err.value) and str(path) in str(err.value)


def test_pair_count_mismatch_and_label_range(tmp_path):
    x = np.zeros((5, 2, 2), np.uint8)
    xp = _write(tmp_path / "x.gz", jidx.encode_idx(x))
    ok = _write(tmp_path / "ok.gz", jidx.encode_idx(np.array([0, 9, 3, 4, 5], np.uint8)))
    xs, ys = jidx.load_idx_pair(xp, ok)
    assert xs.shape == (5, 2, 2) and ys.tolist() == [0, 9, 3, 4, 5]
    short = _write(tmp_path / "short.gz", jidx.encode_idx(np.zeros(4, np.uint8)))
    with pytest.raises(jidx.DataError, match="count mismatch.*5 images.*4 labels") as err:
        jidx.load_idx_pair(xp, short)
    assert str(xp) in str(err.value) and str(short) in str(err.value)
    big = _write(tmp_path / "big.gz", jidx.encode_idx(np.array([0, 1, 10, 2, 12], np.uint8)))
    with pytest.raises(jidx.DataError, match=r"2 labels outside 0..9 \(first: 10 at index 2\)"):
        jidx.load_idx_pair(xp, big)
    neg = _write(tmp_path / "neg.gz", jidx.encode_idx(np.array([0, -1, 2, 3, 4], np.int8)))
    with pytest.raises(jidx.DataError, match="outside 0..9"):
        jidx.load_idx_pair(xp, neg)
    with pytest.raises(jidx.DataError, match="outside 0..2"):
        jidx.load_idx_pair(xp, ok, num_classes=3)
    flat = _write(tmp_path / "flat.gz", jidx.encode_idx(np.zeros((5, 4), np.uint8)))
    with pytest.raises(jidx.DataError, match="images must have 3 dimensions"):
        jidx.load_idx_pair(flat, ok)
    with pytest.raises(jidx.DataError, match="labels must have 1 dimension"):
        jidx.load_idx_pair(xp, xp)
    fl = _write(tmp_path / "fl.gz", jidx.encode_idx(np.zeros(5, np.float32)))
    with pytest.raises(jidx.DataError, match="labels must be integers"):
        jidx.load_idx_pair(xp, fl)


# ---------------------------------------------------------------------------------------------
# Registry, loading, lookup order.


def test_registry():
    assert set(jregistry.DATASETS) == {"mnist", "fashion_mnist", "fake"}
    fake_spec = jregistry.DATASETS["fake"]  # for tests: unchecked, never downloaded
    assert fake_spec.mirrors == () and all(f.sha256 is f.shape is None for f in fake_spec.files)
    assert [f.filename for f in fake_spec.files] == list(NAMES.values())
    for name, spec in jregistry.DATASETS.items():
        if name == "fake":
            continue
        assert spec.name == name and spec.num_classes == 10 and spec.mirrors
        assert [f.role for f in spec.files] == list(jregistry.ROLES)
        assert [f.filename for f in spec.files] == list(NAMES.values())
        assert [f.shape for f in spec.files] == [
            (60000, 28, 28),
            (60000,),
            (10000, 28, 28),
            (10000,),
        ]
        for f in spec.files:
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0
    hashes = [f.sha256 for s in jregistry.DATASETS.values() for f in s.files if f.sha256]
    assert len(set(hashes)) == len(hashes)
    assert "/usr/share/datasets/fashion-mnist" in jregistry.DATASETS["fashion_mnist"].system_dirs
    assert jregistry.get_spec("Fashion-MNIST") is jregistry.DATASETS["fashion_mnist"]
    with pytest.raises(jidx.DataError, match="unknown data set 'cifar'.*: fake, fashion_mnist"):
        jregistry.load_dataset("cifar")


def test_load_from_data_dir_direct_and_subfolder(tiny, tmp_path):
    direct = _write_tiny(tmp_path / "direct", tiny)
    ds = jregistry.load_dataset("tiny", direct, download=False)
    _assert_loaded(ds, tiny)
    assert all(not a.flags.writeable for a in ds)
    assert ds.y_train.dtype == np.uint8 and ds.x_train.dtype == np.uint8
    assert jregistry.load_dataset("tiny", str(direct), download=False) is ds  # cached
    _write_tiny(tmp_path / "root" / "tiny", tiny)
    _assert_loaded(jregistry.load_dataset("tiny", tmp_path / "root", download=False), tiny)


def test_load_rejects_checksum_mismatch_and_rereads_changed_files(tiny, tmp_path, env):
    folder = _write_tiny(tmp_path / "d", tiny)
    jregistry.load_dataset("tiny", folder, download=False)
    # A valid IDX file with other content: structurally fine, but not the registry's file.
    other = tiny["test_labels"].copy()
    other[0] = (other[0] + 1) % 10
    jidx.write_idx(folder / NAMES["test_labels"], np.concatenate([other, other[:1]]))
    with pytest.raises(jidx.DataError, match="t10k-labels-idx1-ubyte.gz: sha256 .*not used"):
        jregistry.load_dataset("tiny", folder, download=False)
    jidx.write_idx(folder / NAMES["test_labels"], other)
    with pytest.raises(jidx.DataError, match="sha256"):
        jregistry.load_dataset("tiny", folder, download=False)
    # Pair checks run even when checksums match (a registry entry could be wrong).
    bad = dict(tiny, test_labels=np.full(6, 11, np.uint8))
    jidx.write_idx(folder / NAMES["test_labels"], bad["test_labels"])
    env.setitem(jregistry.DATASETS, "tiny", _tiny_spec(bad))
    with pytest.raises(jidx.DataError, match="outside 0..9"):
        jregistry.load_dataset("tiny", folder, download=False)


def test_load_checks_shape_against_registry(tiny, tmp_path, env):
    folder = _write_tiny(tmp_path / "d", tiny)
    spec = jregistry.DATASETS["tiny"]
    files = tuple(
        f
        if f.role != "test_images"
        else jregistry.FileSpec(f.role, f.filename, f.sha256, (6, 5, 5))
        for f in spec.files
    )
    env.setitem(jregistry.DATASETS, "tiny", jregistry.DatasetSpec("tiny", files, spec.mirrors))
    with pytest.raises(jidx.DataError, match=r"expected uint8 of shape \(6, 5, 5\)"):
        jregistry.load_dataset("tiny", folder, download=False)


def test_lookup_order(tiny, tmp_path, env):
    explicit = _write_tiny(tmp_path / "explicit", tiny)
    env_root = tmp_path / "envroot"
    _write_tiny(env_root / "tiny", tiny)
    cache = _write_tiny(jregistry.cache_dir("tiny"), tiny)
    system = _write_tiny(tmp_path / "system", tiny)
    env.setenv("JAXLR_DATA_DIR", str(env_root))

    def found():
        return jregistry.find_dataset_files("tiny", given)["train_images"].parent

    given = explicit
    assert found() == explicit  # explicit beats env var
    given = None
    assert found() == env_root / "tiny"  # env var beats cache
    env.delenv("JAXLR_DATA_DIR")
    assert found() == cache == tmp_path / "cache" / "tiny"  # cache beats system folder
    (cache / NAMES["test_labels"]).unlink()  # an incomplete folder is skipped
    assert found() == system
    for f in system.iterdir():
        f.unlink()
    env.setenv("JAXLR_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(jidx.DataError) as err:
        jregistry.find_dataset_files("tiny")
    msg = str(err.value)
    for where in (tmp_path / "nowhere" / "tiny", tmp_path / "nowhere", cache, system):
        assert str(where) in msg
    assert "no such folder" in msg and "none of the files" in msg
    assert "incomplete, missing t10k-labels-idx1-ubyte.gz" in msg
    assert "download=False" in msg and "JAXLR_DATA_DIR" in msg and "data_dir" in msg
    _assert_loaded(jregistry.load_dataset("tiny", explicit, download=False), tiny)


def test_cache_dir_respects_xdg_and_home(env, tmp_path):
    assert jregistry.cache_dir("mnist") == tmp_path / "cache" / "mnist"
    env.delenv("JAXLR_CACHE_DIR")
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jregistry.cache_dir("mnist") == tmp_path / "xdg" / "jaxlr" / "mnist"
    env.setenv("XDG_CACHE_HOME", "relative/ignored")
    env.setenv("HOME", str(tmp_path / "home"))
    assert jregistry.cache_dir("mnist") == tmp_path / "home" / ".cache" / "jaxlr" / "mnist"


def test_candidate_dirs_env_subfolder_names(env, tmp_path):
    env.setenv("JAXLR_DATA_DIR", str(tmp_path))
    dirs = [
        d for origin, d in jregistry.candidate_dirs("fashion_mnist") if origin == "$JAXLR_DATA_DIR"
    ]
    assert dirs == [tmp_path / "fashion_mnist", tmp_path / "fashion-mnist", tmp_path]
    last = jregistry.candidate_dirs("fashion_mnist")[-1]
    assert last == ("system folder", Path("/usr/share/datasets/fashion-mnist"))
    # The same folder given twice is searched once.
    dirs = jregistry.candidate_dirs("mnist", tmp_path)
    assert len(dirs) == len({d for _, d in dirs})


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_data_dir_file_or_missing_is_an_error_not_a_fallback(tiny, tmp_path, env, kind):
    # Valid files where the fall-backs would look: they must not be used.
    _write_tiny(tmp_path / "envroot" / "tiny", tiny)
    _write_tiny(jregistry.cache_dir("tiny"), tiny)
    env.setenv("JAXLR_DATA_DIR", str(tmp_path / "envroot"))
    given = tmp_path / "given"
    if kind == "file":
        given.write_bytes(jidx.encode_idx(tiny["train_images"]))
        expected = f"data_dir {given} is a file, not a folder"
    else:
        expected = f"data_dir {given} does not exist"
    for call in (jregistry.candidate_dirs, jregistry.find_dataset_files, jregistry.load_dataset):
        with pytest.raises(jidx.DataError) as err:
            call("tiny", given)
        assert str(err.value).startswith(expected) and "\n" not in str(err.value), call
    with pytest.raises(jidx.DataError, match=expected):
        jregistry.load_dataset("tiny", str(given), download=True)
    # Without data_dir the fall-backs work.
    _assert_loaded(jregistry.load_dataset("tiny"), tiny)


def test_data_dir_without_the_files_is_an_error_not_a_fallback(tiny, tmp_path, env, server):
    base, routes, log = server
    _serve(routes, "/m", tiny)
    env.setenv("JAXLR_MIRRORS", f"{base}/m")
    _write_tiny(tmp_path / "envroot", tiny)
    env.setenv("JAXLR_DATA_DIR", str(tmp_path / "envroot"))
    given = tmp_path / "given"
    _write_tiny(given, tiny, roles=("train_images", "train_labels"))
    with pytest.raises(jidx.DataError) as err:
        jregistry.load_dataset("tiny", given, download=True)
    msg = str(err.value)
    assert msg.startswith(f"data set 'tiny' not found in data_dir {given}")
    assert "incomplete, missing t10k-images-idx3-ubyte.gz" in msg
    assert str(tmp_path / "envroot") not in msg.split("leave data_dir out")[0]
    assert log == []  # no download either
    assert [o for o, _ in jregistry.candidate_dirs("tiny", given)] == ["data_dir argument"] * 2


# ---------------------------------------------------------------------------------------------
# Fake data sets for tests.


def test_fake_dataset_loads_by_data_dir(env, tmp_path):
    folder = jfake.write_fake_dataset(tmp_path / "fake", num_train=50, num_test=20, seed=3)
    assert folder == tmp_path / "fake"
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES.values())
    ds = jregistry.load_dataset("fake", folder)
    assert [a.shape for a in ds] == [(50, 28, 28), (50,), (20, 28, 28), (20,)]
    assert all(a.dtype == np.uint8 and not a.flags.writeable for a in ds)
    assert np.bincount(ds.y_train).tolist() == [5] * 10  # every class, balanced
    assert np.bincount(ds.y_test).tolist() == [2] * 10
    # Deterministic in the arguments; another seed gives other data.
    again = jfake.write_fake_dataset(tmp_path / "again", 50, 20, 3)
    assert all((again / n).read_bytes() == (folder / n).read_bytes() for n in NAMES.values())
    other = jfake.fake_arrays(50, 20, 4)
    assert not np.array_equal(other["train_images"], ds.x_train)
    # Other shapes and class counts; the folder may also be a root holding fake/.
    jfake.write_fake_dataset(tmp_path / "root" / "fake", 7, 3, 0, image_shape=(5, 4), num_classes=3)
    small = jregistry.load_dataset("fake", tmp_path / "root")
    assert small.x_train.shape == (7, 5, 4) and set(small.y_train.tolist()) == {0, 1, 2}
    # "fake" is never searched for outside data_dir's reach or downloaded.
    with pytest.raises(jidx.DataError, match="no download mirrors for fake"):
        jregistry.load_dataset("fake")


def test_fake_dataset_is_learnable_but_not_trivial():
    a = jfake.fake_arrays(500, 500, seed=0)
    x_tr = a["train_images"].reshape(500, -1).astype(np.float64)
    x_te = a["test_images"].reshape(500, -1).astype(np.float64)
    means_KD = np.stack([x_tr[a["train_labels"] == k].mean(0) for k in range(10)])
    dist_NK = ((x_te[:, None, :] - means_KD[None]) ** 2).sum(-1)
    acc = float((dist_NK.argmin(1) == a["test_labels"]).mean())
    # Class patterns: a linear rule finds them; one image in ten shows a random class.
    assert 0.8 < acc < 0.97
    # ... but every image is noisy: within one class pixels vary, some "on" pixels look "off".
    x0 = a["train_images"][a["train_labels"] == 0].astype(np.float64)
    assert x0.std(axis=0).mean() > 40
    on = x0.mean(axis=0) > 115
    assert 0.02 < float((x0[:, on] < 115).mean()) < 0.3


def test_fake_files_under_a_real_name_need_verify_false(env, tmp_path):
    folder = jfake.write_fake_dataset(tmp_path / "f", 12, 6, seed=1)
    with pytest.raises(jidx.DataError, match="sha256 .*not used"):
        jregistry.load_dataset("mnist", folder)
    ds = jregistry.load_dataset("mnist", folder, verify=False)
    assert ds.x_train.shape == (12, 28, 28)
    # verify=False still checks the structure.
    jidx.write_idx(folder / NAMES["test_labels"], np.full(6, 10, np.uint8))
    with pytest.raises(jidx.DataError, match="outside 0..9"):
        jregistry.load_dataset("mnist", folder, verify=False)
    jidx.write_idx(folder / NAMES["test_images"], np.zeros((6, 5, 5), np.uint8))
    jidx.write_idx(folder / NAMES["test_labels"], np.zeros(6, np.uint8))
    with pytest.raises(jidx.DataError, match=r"images of shape \(28, 28\).*\(5, 5\)"):
        jregistry.load_dataset("fake", folder)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_train=0), "num_train must be an integer >= 1, got 0"),
        (dict(num_test=2.5), "num_test must be an integer >= 1, got 2.5"),
        (dict(seed=-1), "seed must be an integer >= 0, got -1"),
        (dict(num_classes=11), "num_classes must be an integer 2..10, got 11"),
        (dict(num_classes=True), "num_classes must be an integer 2..10, got True"),
        (dict(image_shape=(28,)), "image_shape must be (height, width), got (28,)"),
        (dict(image_shape=(28, 0)), "image_shape must be an integer >= 1, got 0"),
    ],
)
def test_fake_dataset_bad_arguments(tmp_path, kwargs, message):
    args = dict(num_train=10, num_test=5, seed=0) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        jfake.write_fake_dataset(tmp_path / "f", **args)
    assert not (tmp_path / "f").exists()


# ---------------------------------------------------------------------------------------------
# The layering: the engine and preprocessing do not import the downloader.


def test_engine_does_not_import_the_downloader():
    code = (
        "import sys, jaxlr.engine.train, jaxlr.data.images, jaxlr.data.idx; "
        "print(sorted(m for m in ('jaxlr.data.registry', 'urllib.request') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = "import sys, jaxlr.data.registry; print('urllib.request' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"  # the check above can fail


# ---------------------------------------------------------------------------------------------
# Loopback downloads: a local HTTP server on 127.0.0.1 serving files the test wrote.


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}  # path -> (status, body, declared length or None); set per server
    log: list = []
    release: threading.Event = threading.Event()

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.log.append(self.path)
        if self.path not in self.routes:
            self.send_error(404)
            return
        status, body, declared = self.routes[self.path]
        if status == "stall":
            self.release.wait(10)
            return
        if status != 200:
            self.send_error(status)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) if declared is None else declared))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """Yields (base_url, routes, log); shut down and joined after the test."""
    handler = type("H", (_Handler,), {"routes": {}, "log": [], "release": threading.Event()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.routes, handler.log
    finally:
        handler.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
        assert not thread.is_alive()


def _serve(routes, prefix, arrays, roles=jregistry.ROLES):
    for role in roles:
        routes[f"{prefix}/{NAMES[role]}"] = (200, _gz(jidx.encode_idx(arrays[role])), None)


def _cache_listing(name="tiny"):
    folder = jregistry.cache_dir(name)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_success_with_progress(tiny, server, env, capsys):
    base, routes, log = server
    _serve(routes, "/m1", tiny)
    env.setenv("JAXLR_MIRRORS", f"{base}/m1/")
    ds = jregistry.load_dataset("tiny")
    _assert_loaded(ds, tiny)
    assert _cache_listing() == sorted(NAMES.values())  # nothing else, no temp files
    assert sorted(log) == sorted(f"/m1/{n}" for n in NAMES.values())
    err = capsys.readouterr().err
    assert f"downloading {base}/m1/train-images-idx3-ubyte.gz" in err and "100%" in err
    # Now cached: a second process-level lookup finds it without the server.
    log.clear()
    jregistry.clear_cache()
    _assert_loaded(jregistry.load_dataset("tiny"), tiny)
    assert log == []


def test_download_checksum_mismatch_rejected(tiny, server, env):
    base, routes, log = server
    wrong = dict(tiny, train_labels=(tiny["train_labels"] + 1) % 10)
    _serve(routes, "/bad", wrong)
    env.setenv("JAXLR_MIRRORS", f"{base}/bad")
    with pytest.raises(jidx.DataError) as err:
        jregistry.load_dataset("tiny")
    msg = str(err.value)
    assert f"{base}/bad/train-labels-idx1-ubyte.gz: ChecksumError" in msg and "sha256" in msg
    # Files before the bad one were verified and kept; the bad one left nothing behind.
    assert _cache_listing() == ["train-images-idx3-ubyte.gz"]


def test_download_falls_back_across_mirrors(tiny, server, env, tmp_path):
    base, routes, log = server
    for role in jregistry.ROLES:
        routes[f"/e500/{NAMES[role]}"] = (500, b"", None)
        body = _gz(jidx.encode_idx(tiny[role]))
        routes[f"/short/{NAMES[role]}"] = (200, body[: len(body) // 2], len(body))
        routes[f"/notgz/{NAMES[role]}"] = (200, jidx.encode_idx(tiny[role]), None)
        routes[f"/slow/{NAMES[role]}"] = ("stall", b"", None)
    _serve(routes, "/good", tiny)
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    env.setenv("JAXLR_DOWNLOAD_TIMEOUT", "0.3")
    mirrors = [
        f"{base}/e404",
        f"{base}/e500",
        dead,
        f"{base}/short",
        f"{base}/notgz",
        f"{base}/slow",
        f"{base}/good",
    ]
    env.setenv("JAXLR_MIRRORS", ", ".join(mirrors))
    start = time.monotonic()
    _assert_loaded(jregistry.load_dataset("tiny"), tiny)
    assert time.monotonic() - start < 10
    first = NAMES["train_images"]
    served = [p for p in log if p.endswith(first)]
    assert served == [f"/{m}/{first}" for m in ("e404", "e500", "short", "notgz", "slow", "good")]
    assert _cache_listing() == sorted(NAMES.values())


def test_interrupted_download_leaves_nothing(tiny, server, env):
    base, routes, log = server
    _serve(routes, "/m", tiny)
    env.setenv("JAXLR_MIRRORS", f"{base}/m")
    real = jregistry._progress_printer

    def interrupting(label, total):
        show = real(label, total)

        def wrapped(done, final=False):
            show(done, final)
            if done > 0:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-transfer

        return wrapped

    env.setattr(jregistry, "_progress_printer", interrupting)
    with pytest.raises(KeyboardInterrupt):
        jregistry.load_dataset("tiny")
    assert _cache_listing() == []  # not even a temporary file
    env.setattr(jregistry, "_progress_printer", real)
    _assert_loaded(jregistry.load_dataset("tiny"), tiny)


def test_download_failure_lists_everything(tiny, server, env, tmp_path):
    base, routes, log = server
    routes[f"/e500/{NAMES['train_images']}"] = (500, b"", None)
    env.setenv("JAXLR_MIRRORS", f"{base}/e404 {base}/e500")
    env.setenv("JAXLR_DATA_DIR", str(tmp_path / "given"))
    with pytest.raises(jidx.DataError) as err:
        jregistry.load_dataset("tiny")
    msg = str(err.value)
    for line in (
        f"{base}/e404/{NAMES['train_images']}: HTTP 404",
        f"{base}/e500/{NAMES['train_images']}: HTTP 500",
        str(tmp_path / "given"),
        str(jregistry.cache_dir("tiny")),
        str(tmp_path / "system"),
        "Download into",
        "To provide the files",
    ):
        assert line in msg
    assert _cache_listing() == []


def test_download_fetches_only_missing_files(tiny, server, env):
    base, routes, log = server
    _write_tiny(jregistry.cache_dir("tiny"), tiny, roles=("train_images", "train_labels"))
    _serve(routes, "/tiny", tiny)
    env.setenv("JAXLR_MIRRORS", f"{base}/{{name}}/")  # {name} is replaced by the data set name
    _assert_loaded(jregistry.load_dataset("tiny"), tiny)
    assert sorted(log) == sorted(f"/tiny/{NAMES[r]}" for r in ("test_images", "test_labels"))


def test_download_file_direct(server, tmp_path):
    base, routes, log = server
    raw = jidx.encode_idx(np.arange(7, dtype=np.uint8))
    routes["/x.gz"] = (200, _gz(raw), None)
    dest = tmp_path / "deep" / "x.gz"
    got = jregistry.download_file(
        [f"{base}/y.gz", f"{base}/x.gz"], dest, hashlib.sha256(raw).hexdigest(), timeout=2
    )
    assert got == dest and dest.read_bytes() == _gz(raw)
    with pytest.raises(jidx.DataError, match="could not download z.gz"):
        jregistry.download_file([f"{base}/x.gz"], tmp_path / "z.gz", "1" * 64, timeout=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]


# ---------------------------------------------------------------------------------------------
# Preprocessing.

_X = np.array([[[0, 255], [127, 128]], [[1, 2], [3, 254]]], np.uint8)  # [2, 2, 2]


@pytest.mark.parametrize("to", [np.asarray, jnp.asarray], ids=["numpy", "jax"])
def test_preprocessing_functions(to):
    x = to(_X)
    flat = jimages.flatten(x)
    assert flat.shape == (2, 4) and flat.tolist() == [[0, 255, 127, 128], [1, 2, 3, 254]]
    unit = jimages.scale_images(x, "unit")
    sym = jimages.scale_images(x, "symmetric")
    assert unit.dtype == np.float32 and sym.dtype == np.float32
    assert float(unit.min()) == 0.0 and float(unit.max()) == 1.0
    assert float(sym.min()) == -1.0 and float(sym.max()) == 1.0
    np.testing.assert_allclose(np.asarray(sym), _X / 127.5 - 1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(unit), _X / 255, rtol=1e-6)
    assert jimages.scale_images(x, "unit", np.float64).dtype == np.float64
    biased = jimages.add_bias_feature(jimages.flatten(sym))
    assert biased.shape == (2, 5) and biased.dtype == np.float32
    assert np.asarray(biased)[:, -1].tolist() == [1.0, 1.0]
    np.testing.assert_array_equal(np.asarray(biased)[:, :4], np.asarray(jimages.flatten(sym)))
    pre = jimages.preprocess(x)
    np.testing.assert_array_equal(np.asarray(pre), np.asarray(biased))
    assert jimages.preprocess(x, scale="unit", bias=False).shape == (2, 4)
    assert isinstance(pre, jax.Array) == isinstance(x, jax.Array)
    oh = jimages.one_hot(to(np.array([3, 0, 9])), 10)
    assert np.asarray(oh)[0].tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert np.asarray(oh).sum(1).tolist() == [1, 1, 1] and np.asarray(oh)[2, 9] == 1
    assert oh.shape == (3, 10) and oh.dtype == np.float32


def test_preprocess_mnist_shape_and_jit():
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    out = jax.jit(jimages.preprocess)(x)
    assert out.shape == (3, 785) and out.dtype == jnp.float32
    # XLA may turn the division into a multiplication by the reciprocal: 1 ulp apart.
    np.testing.assert_allclose(np.asarray(out), jimages.preprocess(x), rtol=2e-7, atol=1e-7)
    assert float(out.min()) >= -1 and float(out.max()) <= 1 and bool((out[:, 784] == 1).all())


def test_preprocessing_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        jimages.scale_images(_X, "minmax")
    with pytest.raises(ValueError, match="integer pixels"):
        jimages.scale_images(_X / 255.0)
    with pytest.raises(ValueError, match="rank >= 2"):
        jimages.flatten(np.zeros(3))
    with pytest.raises(ValueError, match=r"0..9, found 0..10"):
        jimages.one_hot(np.array([0, 10]), 10)


def test_binary_subset():
    x = np.arange(8)[:, None] * np.ones((1, 3), int)
    y = np.array([2, 3, 5, 2, 3, 3, 0, 2], np.uint8)
    xs, ys = jimages.binary_subset(x, y, positive=2, negative=3)
    assert xs[:, 0].tolist() == [0, 1, 3, 4, 5, 7] and ys.tolist() == [1, 0, 1, 0, 0, 1]
    assert ys.dtype == np.uint8
    xs, ys = jimages.binary_subset(x, y, positive=3, negative=2)
    assert ys.tolist() == [0, 1, 0, 1, 1, 0]
    xj, yj = jimages.binary_subset(jnp.asarray(x), jnp.asarray(y))
    assert isinstance(xj, jax.Array) and isinstance(yj, jax.Array)
    assert yj.tolist() == [1, 0, 1, 0, 0, 1]
    with pytest.raises(ValueError, match="no example has label 7 or 8"):
        jimages.binary_subset(x, y, 7, 8)
    with pytest.raises(ValueError, match="both 2"):
        jimages.binary_subset(x, y, 2, 2)
    with pytest.raises(ValueError, match="8 examples but 7 labels"):
        jimages.binary_subset(x, y[:7])


# ---------------------------------------------------------------------------------------------
# Splits.


def _synthetic_dataset():
    # Training labels chosen so that pruning before vs after slicing give different results.
    y_train = np.array([2, 3, 1, 2, 2, 3, 3, 3, 2, 2], np.uint8)
    x_train = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    y_test = np.array([3, 2, 0, 3], np.uint8)
    x_test = (100 + np.arange(4, dtype=np.uint8))[:, None, None] * np.ones((1, 2, 2), np.uint8)
    return jregistry.Dataset(x_train, y_train, x_test, y_test)


def test_tdt4265_split():
    ds = _synthetic_dataset()
    s = jsplits.tdt4265_split(ds, num_train=5)
    assert s.x_train.shape == (5, 2, 2) and s.x_val.shape == (4, 2, 2)
    assert s.y_train.tolist() == [2, 3, 1, 2, 2] and s.y_val.tolist() == [3, 2, 0, 3]
    s = jsplits.tdt4265_split(ds, digits=(2, 3), num_train=5)
    assert s.x_train[:, 0, 0].tolist() == [0, 1, 3, 4] and s.y_train.tolist() == [1, 0, 1, 1]
    assert s.x_val[:, 0, 0].tolist() == [100, 101, 103] and s.y_val.tolist() == [0, 1, 0]
    assert s.x_train.dtype == np.uint8  # not preprocessed
    with pytest.raises(ValueError, match="num_train must be an integer in 1..10"):
        jsplits.tdt4265_split(ds, num_train=11)


def test_first_last_split():
    x, y = np.arange(10) * 10, np.arange(10)
    s = jsplits.first_last_split(x, y, 3, 4)
    assert s.x_train.tolist() == [0, 10, 20] and s.y_val.tolist() == [6, 7, 8, 9]
    assert jsplits.first_last_split(x, y, 6, 4).x_val.tolist() == [60, 70, 80, 90]
    for args, what in (
        ((0, 4), "num_first"),
        ((3, 0), "num_last"),
        ((6, 5), "num_last"),
        ((11, 1), "num_first"),
        ((2.0, 3), "num_first"),
    ):
        with pytest.raises(ValueError, match=what):
            jsplits.first_last_split(x, y, *args)
    with pytest.raises(ValueError, match="10 examples but 9 labels"):
        jsplits.first_last_split(x, y[:9], 3, 3)


def test_random_split():
    x, y = np.arange(50) * 2, np.arange(50)
    a = jsplits.random_split(x, y, 10, seed=0)
    b = jsplits.random_split(x, y, 10, seed=0)
    c = jsplits.random_split(x, y, 10, seed=1)
    assert a.y_val.tolist() == b.y_val.tolist() != c.y_val.tolist()
    assert len(a.y_train) == 40 and len(a.y_val) == 10
    assert sorted(a.y_train.tolist() + a.y_val.tolist()) == list(range(50))
    np.testing.assert_array_equal(a.x_train, 2 * a.y_train)
    assert np.all(np.diff(a.y_train) > 0) and np.all(np.diff(a.y_val) > 0)
    assert a.y_val.tolist() != list(range(10))
    for bad in (0, 50, -1):
        with pytest.raises(ValueError, match="num_val must be an integer in 1..49"):
            jsplits.random_split(x, y, bad, seed=0)


# ---------------------------------------------------------------------------------------------
# Mini-batch indices.


def test_num_batches():
    assert jbatches.num_batches(10, 3) == 3
    assert jbatches.num_batches(10, 3, drop_last=False) == 4
    assert jbatches.num_batches(9, 3, drop_last=False) == 3
    assert jbatches.num_batches(20000, 32) == 625
    assert jbatches.num_batches(2, 3, drop_last=False) == 1
    with pytest.raises(ValueError, match="no batch"):
        jbatches.num_batches(2, 3)
    for n, b in ((0, 3), (5, 0), (5, -1)):
        with pytest.raises(ValueError, match="must be > 0"):
            jbatches.num_batches(n, b)
    with pytest.raises(TypeError):
        jbatches.num_batches(10, 2.5)


_epoch = jax.jit(
    jbatches.epoch_batches, static_argnames=("num_examples", "batch_size", "shuffle", "drop_last")
)


@pytest.mark.parametrize("fn", [jbatches.epoch_batches, _epoch], ids=["eager", "jit"])
def test_epoch_batches_no_shuffle(fn):
    idx, mask = fn(
        None if fn is jbatches.epoch_batches else jax.random.key(0),
        num_examples=10,
        batch_size=3,
        shuffle=False,
    )
    assert idx.dtype == jnp.int32 and mask.dtype == jnp.bool_
    assert idx.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]] and bool(mask.all())
    idx, mask = fn(jax.random.key(0), num_examples=10, batch_size=3, shuffle=False, drop_last=False)
    assert idx.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 0]]
    assert mask.tolist() == [[True] * 3] * 3 + [[True, False, False]]


@pytest.mark.parametrize("drop_last", [True, False])
def test_epoch_batches_shuffle(drop_last):
    n, b = 23, 5
    key = jax.random.key(1)
    idx, mask = _epoch(key, num_examples=n, batch_size=b, shuffle=True, drop_last=drop_last)
    eager = jbatches.epoch_batches(key, n, b, shuffle=True, drop_last=drop_last)
    np.testing.assert_array_equal(idx, eager[0])
    np.testing.assert_array_equal(mask, eager[1])
    assert idx.shape == mask.shape == ((4, 5) if drop_last else (5, 5))
    real = np.asarray(idx)[np.asarray(mask)]
    assert len(set(real.tolist())) == len(real) == (20 if drop_last else 23)
    assert set(real.tolist()) <= set(range(n))
    if not drop_last:
        assert int(mask.sum()) == n and not bool(mask[-1, 3:].any())
        assert set(real.tolist()) == set(range(n))
    assert real.tolist() != sorted(real.tolist())  # actually shuffled
    other, _ = _epoch(
        jax.random.key(2), num_examples=n, batch_size=b, shuffle=True, drop_last=drop_last
    )
    assert not np.array_equal(idx, other)


def test_epoch_batches_vmap_over_keys():
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.jit(
        jax.vmap(
            functools.partial(jbatches.epoch_batches, num_examples=12, batch_size=4, shuffle=True)
        )
    )
    idx_SMB, mask_SMB = batched(keys)
    assert idx_SMB.shape == mask_SMB.shape == (3, 3, 4)
    for s in range(3):
        np.testing.assert_array_equal(
            idx_SMB[s], jbatches.epoch_batches(keys[s], 12, 4, shuffle=True)[0]
        )
    plain = jax.vmap(
        functools.partial(jbatches.epoch_batches, num_examples=12, batch_size=4, shuffle=False)
    )(keys)[0]
    assert plain.shape == (3, 3, 4) and (plain == jnp.arange(12).reshape(3, 4)).all()
    with pytest.raises(ValueError, match="needs a PRNG key"):
        jbatches.epoch_batches(None, 12, 4, shuffle=True)


# ---------------------------------------------------------------------------------------------
# Real data (skipped when the files are not found).


def _real_files(name):
    try:
        return jregistry.find_dataset_files(name, download=False)
    except jidx.DataError:
        pytest.skip(
            f"real {name} files not found in $JAXLR_DATA_DIR, the user cache or system folders "
            "(set JAXLR_DATA_DIR to the folder holding mnist/ and fashion-mnist/)"
        )


@pytest.mark.realdata
def test_real_mnist():
    _real_files("mnist")
    start = time.perf_counter()
    ds = jregistry.load_dataset("mnist", download=False)
    first = time.perf_counter() - start
    start = time.perf_counter()
    assert jregistry.load_dataset("mnist", download=False) is ds
    again = time.perf_counter() - start
    assert first < 10 and again < 0.1, (first, again)
    assert [a.shape for a in ds] == [(60000, 28, 28), (60000,), (10000, 28, 28), (10000,)]
    assert all(a.dtype == np.uint8 for a in ds)
    assert int(ds.x_train.max()) == 255 and int(ds.x_train.min()) == 0
    assert ds.y_train[:5].tolist() == [5, 0, 4, 1, 9] and ds.y_test[:5].tolist() == [7, 2, 1, 0, 4]
    first20k = ds.y_train[:20000]
    assert int((first20k == 2).sum()) == 1929 and int((first20k == 3).sum()) == 2076
    assert int((ds.y_test == 2).sum()) == 1032 and int((ds.y_test == 3).sum()) == 1010
    s = jsplits.tdt4265_split(ds, digits=(2, 3))
    assert len(s.y_train) == 1929 + 2076 and len(s.y_val) == 1032 + 1010
    assert int(s.y_train.sum()) == 1929 and int(s.y_val.sum()) == 1032
    full = jsplits.tdt4265_split(ds)
    assert full.x_train.shape == (20000, 28, 28) and full.x_val.shape == (10000, 28, 28)
    x_ND = jimages.preprocess(s.x_train)
    assert x_ND.shape == (4005, 785) and x_ND.min() == -1 and x_ND.max() == 1


@pytest.mark.realdata
def test_real_fashion_mnist():
    _real_files("fashion_mnist")
    ds = jregistry.load_dataset("fashion-mnist", download=False)
    assert [a.shape for a in ds] == [(60000, 28, 28), (60000,), (10000, 28, 28), (10000,)]
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10


@pytest.mark.realdata
def test_real_wrong_dataset_in_folder_is_named():
    fashion = _real_files("fashion_mnist")["train_images"].parent
    jregistry.clear_cache()
    with pytest.raises(jidx.DataError, match="It is fashion_mnist's train_images file"):
        jregistry.load_dataset("mnist", fashion, download=False)
