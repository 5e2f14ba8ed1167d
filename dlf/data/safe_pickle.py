"""Restricted loading of data pickles: containers, strings, numbers and plain numpy arrays only.

A pickle is a small program: ``pickle.load`` calls whatever importable callable the file names
(``os.system`` included), so a hostile MMSA feature file would run code under ``data check``,
``train`` or a cached ``run``. :func:`load_file` refuses, before calling anything, every global
outside a fixed list: the builtin containers and number types, ``_codecs.encode`` (protocol 0-2
bytes) and the numpy names that numpy 1.x and 2.x pickles of arrays, dtypes and scalars reference.

The admitted numpy names are not handed out as they are, because several accept raw memory:
``numpy.ndarray(shape, 'O', buffer=b'...')`` builds an object array out of forged pointers, and
``dtype.__setstate__`` accepts a structured dtype whose object field numpy then no longer sees
(``hasobject`` False), so a later array reads pointers from raw bytes. Each admitted name is
therefore a wrapper taking only what numpy's own pickles pass, every dtype is checked to be a
plain one (bool, integer, float, complex, string, bytes, object) and re-created from its type
string before an array uses it, and BUILD (``__setstate__``) is allowed on arrays and dtypes only.
The pure-Python unpickler is used because the C one offers no hook for BUILD; MMSA files are a
few large byte strings plus short lists, so the cost is small.
"""
from __future__ import annotations

import builtins
import io
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from dlf.errors import DLFError

try:  # numpy >= 2 (numpy.core is a deprecated alias there)
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray, numeric as _numeric  # type: ignore[no-redef]

ADMITTED = "a pickle may only hold containers, strings, numbers and numpy arrays"
_KINDS = "biufcOUS"  # bool, signed/unsigned int, float, complex, object, str, bytes


class Refused(pickle.UnpicklingError):
    """The pickle names something outside the admitted set; ``what`` says what, for the message."""

    def __init__(self, what: str):
        super().__init__(f"refused to load {what}")
        self.what = what


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a pickle: valid as ``_reconstruct``'s subtype, not callable."""

    def __call__(self, *args, **kwargs):
        raise Refused("a direct call of 'numpy.ndarray' (it can build arrays from raw memory)")

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayToken()


def _plain_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype equal to a plain (unstructured) one, independent of the pickled object; else refused."""
    if not isinstance(dtype, np.dtype):
        raise Refused(f"a {type(dtype).__name__} where a numpy dtype belongs")
    if dtype.names is not None or dtype.subdtype is not None or dtype.kind not in _KINDS:
        raise Refused(f"numpy dtype {str(dtype)!r} (only plain bool, number, string and object dtypes)")
    canonical = np.dtype(dtype.str)
    if canonical.itemsize != dtype.itemsize or dtype.hasobject != (dtype.kind == "O"):
        raise Refused(f"an inconsistent numpy dtype {dtype.str!r}")
    return canonical


def _dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    # copy=True always: BUILD mutates the result, and numpy's shared float64 etc. must stay intact.
    if not isinstance(spec, str):
        raise Refused(f"numpy dtype from a {type(spec).__name__}")
    dtype = np.dtype(spec, bool(align), True)
    if dtype.kind not in _KINDS:
        raise Refused(f"numpy dtype {spec!r} (only plain bool, number, string and object dtypes)")
    return dtype


def _reconstruct(subtype: Any, shape: Any = None, typecode: Any = None) -> np.ndarray:
    # numpy always pickles (ndarray, (0,), b'b'); the real content comes with BUILD, checked there.
    if subtype is not _NDARRAY:
        raise Refused(f"array subtype {subtype!r}")
    return _multiarray._reconstruct(np.ndarray, (0,), b"b")


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)):
        raise Refused(f"array data held in a {type(buf).__name__}")
    return _numeric._frombuffer(buf, _plain_dtype(dtype), shape, order)


def _scalar(dtype: Any, *data: Any) -> Any:
    return _multiarray.scalar(_plain_dtype(dtype), *data)


def _latin1(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol 0-2 pickles write bytes as _codecs.encode(str, 'latin1'); no other codec is needed.
    if not isinstance(text, str) or encoding != "latin1":
        raise Refused(f"'_codecs.encode' with encoding {encoding!r}")
    return text.encode("latin1")


# Containers and number types that pickles of protocol 0-2 reach through REDUCE (protocol 4+ has opcodes).
_BUILTINS = {name: getattr(builtins, name)
             for name in ("dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "complex")}
_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, name): obj for module in ("builtins", "__builtin__") for name, obj in _BUILTINS.items()},
    ("_codecs", "encode"): _latin1,
    ("numpy", "dtype"): _dtype,
    ("numpy", "ndarray"): _NDARRAY,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _reconstruct for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _frombuffer for core in ("core", "_core")},
}


class SafeUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """``pickle``'s pure-Python unpickler with globals, BUILD and item assignment restricted."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: BinaryIO):
        super().__init__(file)
        self._file_readinto = getattr(file, "readinto", None)

    def find_class(self, module: str, name: str) -> Any:
        found = _GLOBALS.get((module, name))
        if found is None:
            raise Refused(repr(f"{'builtins' if module == '__builtin__' else module}.{name}"))
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("a persistent reference (only self-contained pickles are read)")

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is np.ndarray:
            inst.__setstate__(_array_state(state))
        elif isinstance(inst, np.dtype):
            inst.__setstate__(state)
            _plain_dtype(inst)  # the state may have turned it into a structured or odd dtype
        else:
            raise Refused(f"state for a {type(inst).__name__} (only arrays and dtypes take one)")

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        _need(self.stack[-1], dict)[key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = _need(self.stack[-1], dict)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def load_append(self) -> None:
        value = self.stack.pop()
        _need(self.stack[-1], list).append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        _need(self.stack[-1], list).extend(items)

    def load_bytearray8(self) -> None:
        # pickle's own version reads a protocol-5 array payload into a temporary bytes object and
        # copies it over: three passes and twice the array's memory. Read straight into the buffer.
        (size,) = struct.unpack("<Q", self.read(8))
        unframer = getattr(self, "_unframer", None)  # pickle internals: fall back if they change
        if self._file_readinto is None or not hasattr(unframer, "current_frame"):
            return self.append(bytearray(self.read(size)))
        buf, frame = bytearray(size), unframer.current_frame
        got = frame.readinto(buf) if frame else 0
        if got == 0 and size:  # large payloads are written after the current frame, not in one
            unframer.current_frame = None
            with memoryview(buf) as view:
                while got < size and (n := self._file_readinto(view[got:])):
                    got += n
        if got != size:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(buf)

    for _op, _fn in ((pickle.BYTEARRAY8, load_bytearray8), (pickle.BUILD, load_build),
                     (pickle.SETITEM, load_setitem), (pickle.SETITEMS, load_setitems),
                     (pickle.APPEND, load_append), (pickle.APPENDS, load_appends)):
        dispatch[_op[0]] = _fn
    del _op, _fn


def _need(target: Any, kind: type) -> Any:
    if type(target) is not kind:
        raise Refused(f"items added to a {type(target).__name__} (only to a {kind.__name__})")
    return target


def _array_state(state: Any) -> tuple:
    """numpy's array state with its dtype replaced by a checked, fresh copy."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise Refused("an array state that numpy does not write")
    head, dtype, tail = state[:-3], state[-3], state[-2:]
    return (*head, _plain_dtype(dtype), *tail)


def load(fh: BinaryIO) -> Any:
    """Unpickle from a binary file; raises :class:`Refused` for anything outside the admitted set."""
    return SafeUnpickler(fh).load()


def loads(data: bytes) -> Any:
    return load(io.BytesIO(data))


def load_file(path: str | Path) -> Any:
    """Unpickle ``path`` safely; every failure is one :class:`DLFError` line naming the file."""
    try:
        with open(path, "rb") as fh:
            return load(fh)
    except OSError as err:
        raise DLFError(f"{path}: cannot read ({err.strerror or err}); check the path and permissions") from None
    except Refused as err:
        raise DLFError(f"{path}: refused to load {err.what} ({ADMITTED}); this file is not a plain MMSA feature "
                       "file: regenerate it or get it from a trusted source") from None
    except Exception as err:  # unpickling can fail with almost any exception type
        raise DLFError(f"{path}: not a readable pickle ({type(err).__name__}: {_short(err)}); the file is "
                       "truncated or not an MMSA .pkl: download or regenerate it") from None


def _short(err: Exception) -> str:
    return " ".join(str(err).split())[:120] or "no detail"
