"""Build the native core.

One build-wide Cython directive policy (see DIRECTIVES): bounds checks and negative
indexing off, C division on.  ``NKSTREAM_DEBUG=1`` turns the checks back on and builds
without optimisation, so the whole test suite can run against a checked build.

``nkstream._pcap`` (the libpcap engine and BPF compiler) is built only where libpcap's
headers are present (Debian: ``libpcap-dev``); the core itself needs nothing but a C
compiler, so ``pip install .`` works on a bare machine.

The default build is portable (baseline x86-64 / the compiler's default target).
``NKSTREAM_MARCH=native`` (or any ``-march`` value) builds for the CPU the sensor runs
on: a few percent faster here (docs/benchmarks.md), but the result may not run on an
older CPU, so only set it where you build on the machine that runs it.
"""
import os
import sys
import sysconfig

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("NKSTREAM_DEBUG", "") not in ("", "0")
# The project root: `cimport nkstream.includes.*` resolves against it, also when a
# PEP 517 frontend runs this file in an isolated environment with another sys.path.
HERE = os.path.dirname(os.path.abspath(__file__))

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

if DEBUG:
    cflags = ["-O0", "-g", "-UNDEBUG", "-DNKSTREAM_DEBUG=1"]
else:
    cflags = ["-O3", "-DNDEBUG"]
cflags += ["-Wno-unused-function", "-Wno-unreachable-code", "-fno-strict-aliasing"]
# NKSTREAM_DEBUGINFO=1: the optimised build with debug line tables (-g), for
# per-line profiles (bench/instructions.py, perf annotate); the code is unchanged.
DEBUGINFO = not DEBUG and os.environ.get("NKSTREAM_DEBUGINFO", "") not in ("", "0")
if DEBUGINFO:
    cflags.append("-g")
MARCH = os.environ.get("NKSTREAM_MARCH", "").strip()
if MARCH:
    if not MARCH.replace("-", "").replace("_", "").replace(".", "").isalnum():
        sys.exit(f"NKSTREAM_MARCH={MARCH!r}: not a -march value")
    cflags.append(f"-march={MARCH}")
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]


def have_libpcap():
    if os.environ.get("NKSTREAM_NO_PCAP"):
        return False
    incdirs = [sysconfig.get_config_var("INCLUDEDIR") or "", "/usr/include", "/usr/local/include"]
    return any(os.path.exists(os.path.join(d, "pcap", "pcap.h")) for d in incdirs if d)


extensions = [
    Extension(
        "nkstream._core",
        ["nkstream/_core.pyx"],
        include_dirs=[numpy.get_include(), "nkstream"],
        extra_compile_args=cflags,
        define_macros=macros,
    )
]
if have_libpcap() and os.path.exists(os.path.join("nkstream", "_pcap.pyx")):
    extensions.append(
        Extension(
            "nkstream._pcap",
            ["nkstream/_pcap.pyx"],
            include_dirs=[numpy.get_include(), "nkstream"],
            libraries=["pcap"],
            extra_compile_args=cflags,
            define_macros=macros,
        )
    )
else:
    sys.stderr.write("nkstream: libpcap headers not found; building without the libpcap engine (nkstream._pcap)\n")


def mode_changed():
    """Re-cythonize (and so recompile) when switching between the debug and release
    builds or the -march target: the generated C carries the directives, and the
    staleness checks only look at source timestamps."""
    stamp = os.path.join("build", "nkstream-build-mode")
    mode = (("debug" if DEBUG else "release") + (f" march={MARCH}" if MARCH else "")
            + (" debuginfo" if DEBUGINFO else ""))
    try:
        with open(stamp) as fh:
            old = fh.read().strip()
    except OSError:
        old = None
    os.makedirs("build", exist_ok=True)
    with open(stamp, "w") as fh:
        fh.write(mode)
    return old != mode


setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        include_path=[HERE, os.path.join(HERE, "nkstream")],
        annotate=os.environ.get("NKSTREAM_ANNOTATE", "") not in ("", "0"),
        force=mode_changed(),
    ),
)
