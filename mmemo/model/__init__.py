"""The multimodal transformer: its config (``config``), layers (``attention``, ``encoder``), the assembled model
(``multimodal``) and the checkpoint format (``checkpoint``, the only file I/O here). Imports nothing above it."""
