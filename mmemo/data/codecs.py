"""How frames are stored in a shard: lossless HDF5 filters on a (T, S, S, 3) uint8 dataset, or JPEG (the names are
checked by ``mmemo.config.check_frame_codec``).

Measured on real 720p H.264 frames letterboxed to 224x224 (``python benchmarks/extract.py`` prints the table):

- ``lzf`` (default): built into every h5py, so any h5py reads the shards with nothing else installed (the
  project's independent checker among them); ratio ~2.5, the fastest of the built-in filters.
- ``gzip``: level 1, built into HDF5 itself (readable from any language, HDFView, MATLAB); ratio ~3.3, writes
  at half lzf's speed.
- ``zstd``: Zstandard level 3 through ``hdf5plugin`` (``pip install mmemo[zstd]``); ratio ~5 and faster than
  lzf both ways, but every reader needs ``import hdf5plugin``.
- ``jpeg``: lossy, quality 90 by default (``jpeg90``; ``jpeg75`` .. ``jpeg95`` accepted), one JPEG per frame
  in a variable-length dataset ``video/frames_jpeg (T,)``, decoded when read; ratio ~19 at a mean absolute
  error below 1 grey level. For corpora too large for lossless storage.
"""

from __future__ import annotations

import io

import numpy as np

from mmemo.config import JPEG_CODEC, check_frame_codec


def is_jpeg(codec: str) -> bool:
    return JPEG_CODEC.match(codec) is not None


def jpeg_quality(codec: str) -> int:
    return int(JPEG_CODEC.match(codec).group(1) or 90)


def dataset_options(codec: str) -> dict:
    """h5py ``create_dataset`` keyword arguments of a lossless codec."""
    if codec == "lzf":
        return {"compression": "lzf"}
    if codec == "gzip":
        return {"compression": "gzip", "compression_opts": 1}
    if codec == "zstd":
        check_frame_codec(codec)  # a one-line error when hdf5plugin is missing
        import hdf5plugin

        return dict(hdf5plugin.Zstd(clevel=3))
    raise ValueError(f"{codec} is not a lossless codec")


def crop_options(codec: str) -> dict | None:
    """h5py ``create_dataset`` keyword arguments of the face crops, None for the frames' own codec.

    Under lzf (the default) the crops are stored raw: an aligned face fills its crop, with no flat background or
    letterbox bars, so lzf made them only 1.2x smaller for 0.5 ms a row, about a tenth of extraction's CPU time at
    720p (docs/benchmarks.md); rows without a face take no space either way (``ShardWriter._write_crops``). gzip,
    zstd and JPEG, chosen to save space, apply to the crops as to the frames."""
    return {} if codec == "lzf" else None


def encode_jpeg(frames: np.ndarray, quality: int) -> list[np.ndarray]:
    """(n, S, S, 3) uint8 -> n JPEG byte strings as uint8 arrays."""
    from PIL import Image

    out = []
    for img in frames:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        out.append(np.frombuffer(buf.getvalue(), np.uint8))
    return out


def decode_jpeg(blobs, size: int) -> np.ndarray:
    """A sequence of JPEG byte arrays -> (n, size, size, 3) uint8."""
    from PIL import Image

    out = np.empty((len(blobs), size, size, 3), np.uint8)
    for i, b in enumerate(blobs):
        out[i] = np.asarray(Image.open(io.BytesIO(b.tobytes())).convert("RGB"))
    return out
