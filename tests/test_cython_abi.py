"""The cimport ABI of cbn.kernels must only grow.

Every function that cbn/kernels.pxd exports is a capsule in
``cbn.kernels.__pyx_capi__`` whose name is its C signature. Downstream
modules compiled against an older cbn look the functions up by name and trust
that signature, so a changed or removed entry breaks them; a new one does not.
(Cython writes every typed memoryview as ``__Pyx_memviewslice``, so for the
``_mv`` forms the snapshot pins the argument count and order, not the views'
element types.) tests/cython_abi.txt is the snapshot (``name: signature`` per line). After
adding functions, append them with::

    python tests/test_cython_abi.py >> tests/cython_abi.txt   # then review
"""
import ctypes
import pathlib

import cbn.kernels

SNAPSHOT = pathlib.Path(__file__).with_name("cython_abi.txt")

_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.restype = ctypes.c_char_p
_get_name.argtypes = [ctypes.py_object]


def current_abi():
    """{name: signature} of everything cbn.kernels exports to Cython."""
    return {name: _get_name(capsule).decode()
            for name, capsule in cbn.kernels.__pyx_capi__.items()}


def snapshot_abi():
    abi = {}
    for line in SNAPSHOT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, signature = line.split(":", 1)
            abi[name.strip()] = signature.strip()
    return abi


def test_snapshot_is_not_empty():
    assert "forward_train_f32" in snapshot_abi()


def test_no_exported_function_removed():
    missing = sorted(set(snapshot_abi()) - set(current_abi()))
    assert not missing, f"removed from cbn.kernels' cimport API: {missing}"


def test_no_exported_signature_changed():
    current = current_abi()
    changed = {name: (old, current[name])
               for name, old in snapshot_abi().items()
               if name in current and current[name] != old}
    assert not changed, f"signatures changed (snapshot, now): {changed}"


if __name__ == "__main__":
    # Print the entries missing from the snapshot, in its format.
    known = snapshot_abi() if SNAPSHOT.exists() else {}
    for name, signature in sorted(current_abi().items()):
        if name not in known:
            print(f"{name}: {signature}")
