"""The multimodal transformer. No file I/O here: data comes in as tensors, configs as dataclasses."""
