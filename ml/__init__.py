"""Orchard's machine-learning layer: pure PyTorch/NumPy, no Django.

Modules:

- :mod:`ml.templates`   parse and print Hanami cluster templates (no torch import).
- :mod:`ml.networks`    torch networks built from templates, and named architectures.
- :mod:`ml.data`        NumPy arrays -> device tensors.
- :mod:`ml.training`    the training loop (``fit``).
- :mod:`ml.evaluation`  a single ``train_step``, ``evaluate``, the losses and validation scores.
- :mod:`ml.inference`   batched prediction.
- :mod:`ml.metrics`     accuracy, confusion matrix, classification report.
- :mod:`ml.checkpoints` safetensors (de)serialisation of weights and optimizer state.
- :mod:`ml.export`      ONNX / TorchScript / safetensors export with parity checks.
- :mod:`ml.devices`     CPU and GPU inventory (NVML, torch.cuda fallback).

Submodules are imported explicitly (``from ml.training import fit``); importing ``ml`` itself is
cheap and does not import torch.
"""
