"""Audio features on the 25 fps grid: the registry (``registry``), the implementations (``audio``, registered on
import here, so the registry is full whenever this package is imported) and the one path from a clip file to its
grid-aligned arrays (``clip``). No torch here."""

from mmemo.features import audio  # noqa: F401  (registers the features)
