"""Reading the pickle-based dataset formats (CIFAR-10 batches, Nielsen's MNIST) without running numpy's unpickling.

A pickle names the callables that rebuild its objects. Even numpy's own callables are unsafe on a crafted file: a
`numpy.dtype` restated by pickle's BUILD opcode can claim to hold Python objects, and an array then built from raw
bytes makes numpy dereference those bytes as pointers (a segfault, or worse). So no numpy callable is ever handed to
the unpickler. The globals a numpy array pickle uses are mapped to inert stand-ins that only record their
arguments; once the stream is read, each recorded array is checked (a plain numeric dtype: no object dtype, no
fields or sub-arrays, no flags; a shape whose size matches the raw bytes) and built with `np.frombuffer`. Every
other global is refused. A file that fails any check raises `pickle.UnpicklingError` naming what was wrong.

BUILD on a dtype is unavoidable (numpy pickles every array's dtype that way, the official CIFAR-10 files included),
so it is accepted only when it restates a plain dtype: `(3, byte order, None, None, None, -1, -1, 0)`.
"""
from __future__ import annotations

import math
import pickle
from typing import IO, Any

import numpy as np

#: Array element types a dataset pickle may hold: booleans, integers and floats of the usual widths.
PLAIN_DTYPES = frozenset(f"{kind}{size}" for kind, sizes in (("u", (1, 2, 4, 8)), ("i", (1, 2, 4, 8)),
                                                             ("f", (2, 4, 8)), ("b", (1,))) for size in sizes)
_BYTE_ORDERS = ("<", ">", "|", "=")
_MAX_DEPTH = 32


def _refuse(what: str) -> None:
    raise pickle.UnpicklingError(what)


class _Dtype:
    """Stand-in for `numpy.dtype(spec, align, copy)`: a plain numeric dtype, restated at most by a plain BUILD."""

    def __init__(self, spec: Any = None, align: Any = False, copy: Any = True, *extra: Any):
        if extra or not isinstance(spec, str) or spec not in PLAIN_DTYPES:
            kind = "an object dtype" if spec in ("O", "O8", "O4") else f"dtype {spec!r}"
            _refuse(f"refusing to load {kind}: only plain numeric dtypes ({', '.join(sorted(PLAIN_DTYPES))})")
        if type(align) not in (bool, int) or align != 0 or type(copy) not in (bool, int) or copy != 1:
            _refuse(f"refusing to load dtype {spec!r} with align={align!r}, copy={copy!r}")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in _BYTE_ORDERS
                and state[2:5] == (None, None, None) and state[5:] == (-1, -1, 0)):
            _refuse(f"refusing to load a dtype restated as {state!r}: only (3, byte order, None, None, None, -1, -1, "
                    "0) describes a plain dtype")
        order = state[1]
        if order == "|" and self.dtype.itemsize > 1:
            _refuse(f"refusing to load dtype {self.dtype} without a byte order")
        if order in "<>":
            self.dtype = self.dtype.newbyteorder(order)


class _ArrayClass:
    """Stand-in for the `numpy.ndarray` class (only ever an argument of `_reconstruct`)."""

    def __setstate__(self, state: Any) -> None:
        _refuse("refusing to load a state for numpy.ndarray itself")


_NDARRAY = _ArrayClass()


def _raw_bytes(data: Any) -> bytes:
    if isinstance(data, str):  # Python 2 pickles read with encoding='latin1'
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, pickle.PickleBuffer):
        return bytes(data.raw())
    _refuse(f"refusing to load array data of type {type(data).__name__}; expected bytes")
    raise AssertionError  # unreachable


def _build_array(dtype: Any, shape: Any, data: Any, fortran: Any = False) -> np.ndarray:
    """A checked array: plain dtype, shape of non-negative ints whose product matches the bytes given."""
    if not isinstance(dtype, _Dtype):
        _refuse(f"refusing to load an array whose dtype is a {type(dtype).__name__}")
    if not (isinstance(shape, tuple) and len(shape) <= 32 and all(type(n) is int and n >= 0 for n in shape)):
        _refuse(f"refusing to load an array with shape {shape!r}")
    if not isinstance(fortran, bool):
        _refuse(f"refusing to load an array with memory order flag {fortran!r}")
    raw = _raw_bytes(data)
    if len(raw) != math.prod(shape) * dtype.dtype.itemsize:
        _refuse(f"refusing to load an array of shape {shape} and dtype {dtype.dtype} from {len(raw)} bytes")
    flat = np.frombuffer(raw, dtype=dtype.dtype)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


class _PendingArray:
    """Stand-in for `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`: the array comes with BUILD."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            _refuse("refusing to load an array whose state is set twice")
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            _refuse(f"refusing to load an array state of type {type(state).__name__}; expected "
                    "(version, shape, dtype, fortran, bytes)")
        shape, dtype, fortran, data = state
        self.array = _build_array(dtype, shape, data, fortran)


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _PendingArray:
    if cls is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        _refuse(f"refusing to load _reconstruct{(cls, shape, typecode)!r}: only a plain numpy.ndarray")
    return _PendingArray()


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if order not in ("C", "F"):
        _refuse(f"refusing to load an array with order {order!r}")
    return _build_array(dtype, shape, buffer, order == "F")


def _scalar(dtype: Any, data: Any = None) -> Any:
    return _build_array(dtype, (), data)[()]


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """`_codecs.encode`, as Python 2 byte strings arrive in a protocol-2 pickle, for latin-1 text only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        _refuse(f"refusing to load _codecs.encode of a {type(text).__name__} as {encoding!r}")
    return text.encode("latin1")


_STAND_INS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Dtype,
    ("_codecs", "encode"): _encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        canonical = module.replace("numpy._core", "numpy.core", 1)  # numpy >= 2 pickles name numpy._core
        if (canonical, name) not in _STAND_INS:
            _refuse(f"refusing to load {module}.{name}: only plain containers, numbers, strings and numpy arrays "
                    "are allowed")
        return _STAND_INS[(canonical, name)]

    def persistent_load(self, pid: Any) -> Any:
        _refuse("refusing to load a persistent reference")


_IN_PROGRESS = object()


def _resolve(value: Any, depth: int = 0, done: dict[int, Any] | None = None) -> Any:
    """The loaded structure with each pending array replaced by its checked array; only plain types survive.

    Each container is converted once, however often the stream refers to it (so shared references cannot blow the
    work up exponentially), and a container that holds itself is refused."""
    done = {} if done is None else done
    if depth > _MAX_DEPTH:
        _refuse(f"refusing to load containers nested deeper than {_MAX_DEPTH}")
    if id(value) in done:
        if done[id(value)] is _IN_PROGRESS:
            _refuse("refusing to load a container that holds itself")
        return done[id(value)]
    if isinstance(value, _PendingArray):
        if value.array is None:
            _refuse("refusing to load an array that was never given its data")
        return value.array
    if isinstance(value, (dict, list, tuple)):
        done[id(value)] = _IN_PROGRESS
        if isinstance(value, dict):
            result: Any = {_resolve(key, depth + 1, done): _resolve(item, depth + 1, done)
                           for key, item in value.items()}
        else:
            result = type(value)(_resolve(item, depth + 1, done) for item in value)
        done[id(value)] = result
        return result
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.ndarray, np.generic)):
        return value
    _refuse(f"refusing to load an object of type {type(value).__name__}")


def load_array_pickle(handle: IO[bytes], encoding: str = "ASCII") -> Any:
    """Unpickle from `handle`: builtin containers, numbers, strings and checked plain numpy arrays only.

    Any other content, and a damaged stream, raises `pickle.UnpicklingError` saying what was wrong.
    """
    try:
        return _resolve(_ArrayUnpickler(handle, encoding=encoding).load())
    except pickle.UnpicklingError:
        raise
    except (Exception, RecursionError) as err:  # a damaged stream: EOFError, ValueError, KeyError, MemoryError, ...
        detail = f": {str(err).splitlines()[0]}" if str(err).strip() else ""
        raise pickle.UnpicklingError(f"damaged pickle stream ({type(err).__name__}{detail})") from None
