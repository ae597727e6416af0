"""Training: prepare (LR, HR) patch shards exactly as the archive degrades images, and run
typed, resumable multi-stage recipes (``pipelines/*.toml``).

The run path (:mod:`wsistore.training.config`, :mod:`~wsistore.training.shards`,
:mod:`~wsistore.training.trainer`) needs only torch, numpy and safetensors, so training
runs on a GPU machine without zarr or imagecodecs; only ``prepare`` needs them.
"""
