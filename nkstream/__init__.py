"""nkstream: a streaming packet classifier.

Decodes raw frames in a native core, longest-prefix-matches both addresses against
labelled prefix tables, tags packets by port/protocol/payload signatures and counts
them per (watch label, direction, peer label, tag), writing msgpack snapshots that
load into pandas.
"""
__version__ = "0.1.0"

# The public API is imported lazily so `import nkstream` stays cheap for the CLI.
_LAZY = {
    "PrefixTable": "nkstream.prefixes",
    "load_snapshot": "nkstream.snapshot",
    "load_snapshots": "nkstream.snapshot",
    "Snapshot": "nkstream.snapshot",
    "SnapshotError": "nkstream.snapshot",
    "merge_snapshots": "nkstream.snapshot",
    "write_snapshot": "nkstream.snapshot",
    "load_config": "nkstream.config",
    "open_capture": "nkstream.capture",
    "CaptureError": "nkstream.capture",
    "Rules": "nkstream.rules",
    "Classifier": "nkstream.classify",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'nkstream' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value
