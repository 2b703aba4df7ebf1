"""apps.core.safeio: the bounded npy/npz reader returns what np.load returns for every array
np.save writes, and refuses headers np.save never writes (object, sub-array dtypes, oversized
header lengths) before reading any data. The HTTP regressions live in
tests/datasets/test_decoder_limits.py and tests/mlbackend/test_labelprop_limits.py."""

import io
import struct
import zipfile

import numpy as np
import pytest

from apps.core.exceptions import PayloadTooLarge, ValidationFailed
from apps.core.safeio import ArrayLimits, load_npy, load_npz

LIMITS = ArrayLimits(
    max_elements=10_000,
    max_bytes=100_000,
    max_members=4,
    elements_setting="E_SETTING",
    bytes_setting="B_SETTING",
    members_setting="M_SETTING",
)

ARRAYS = {
    "f4": np.arange(24, dtype="<f4").reshape(2, 3, 4),
    "be": np.arange(6, dtype=">i8").reshape(3, 2),
    "fortran": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
    "scalar": np.array(3.5),
    "empty": np.zeros((0, 5), dtype=np.uint8),
    "bool": np.array([True, False, True]),
    "record": np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
}


def _npz(compressed=True, **arrays) -> io.BytesIO:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("compressed", [True, False])
def test_npz_in_memory_matches_np_load(compressed):
    limits = ArrayLimits(**{**LIMITS.__dict__, "max_members": 10})
    arrays = load_npz(_npz(compressed, **ARRAYS), field="f", limits=limits)
    with np.load(_npz(compressed, **ARRAYS)) as expected:
        assert sorted(arrays) == sorted(expected.files)
        for name in expected.files:
            assert arrays[name].dtype == expected[name].dtype, name
            assert arrays[name].shape == expected[name].shape, name
            np.testing.assert_array_equal(arrays[name], expected[name])


def test_npz_extracted_and_npy_memory_mapped(tmp_path):
    limits = ArrayLimits(**{**LIMITS.__dict__, "max_members": 10})
    arrays = load_npz(_npz(**ARRAYS), field="f", limits=limits, extract_to=tmp_path)
    for name, array in ARRAYS.items():
        np.testing.assert_array_equal(arrays[name], array)
    path = tmp_path / "one.npy"
    np.save(path, ARRAYS["fortran"])
    loaded = load_npy(path, field="f", limits=LIMITS)
    assert isinstance(loaded, np.memmap) and loaded.flags.f_contiguous
    np.testing.assert_array_equal(loaded, ARRAYS["fortran"])


def _member(header: bytes, body: bytes = b"") -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", header + body)
    buf.seek(0)
    return buf


def _header(descr: str, shape=(2,)) -> bytes:
    text = f"{{'descr': {descr}, 'fortran_order': False, 'shape': {shape!r}, }}"
    text = text.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


@pytest.mark.parametrize(
    "header,text",
    [
        (_header("'|O'"), "pickles are refused"),
        (_header("[('a', '|O')]"), "pickles are refused"),
        (_header("('<f8', (1000,))"), "sub-array"),
        (_header("'<f8'", (-1,)), "bad shape"),
        # A version 2 header declaring a 4 GiB header: refused after NPY_MAX_HEADER bytes.
        (b"\x93NUMPY\x02\x00" + struct.pack("<I", (1 << 32) - 1) + b"{" * 20_000, "unreadable"),
    ],
)
def test_headers_np_save_never_writes_are_refused(header, text):
    with pytest.raises(ValidationFailed) as info:
        load_npz(_member(header, b"\0" * 64), field="f", limits=LIMITS)
    assert text in info.value.message


def test_limits_name_their_settings():
    for arrays, setting_name in (
        ({"a": np.zeros(10_001, np.uint8)}, "E_SETTING"),
        ({"a": np.zeros(9_000), "b": np.zeros(9_000)}, "B_SETTING"),
        ({k: np.zeros(1) for k in "abcde"}, "M_SETTING"),
    ):
        with pytest.raises(PayloadTooLarge) as info:
            load_npz(_npz(**arrays), field="f", limits=LIMITS)
        assert setting_name in info.value.message
