"""mmemo: multimodal (audio + video) continuous emotion analysis, valence and arousal over time."""

__version__ = "0.1.0"
