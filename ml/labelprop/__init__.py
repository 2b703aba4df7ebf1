"""Label propagation through a 3D volume: learned slice-to-slice registration, shape
interpolation along the fields, and the annotated slices' intensities (pure torch + scipy's
distance transform).

A user annotates a few slices of a volume along one axis; the labels are carried to every other
slice:

- Slices are normalised (1st-99th percentiles) and smoothed by a Gaussian whose width follows the
  noise level estimated on them (:func:`prepare_slices`), in training and propagation alike, so
  that the registration matches anatomy, not noise.
- :class:`RegistrationNet` (:mod:`ml.labelprop.registration`, with the configuration, slice
  preparation and checkpoints), a small 2D U-Net, takes a pair of slices (moving, fixed) and predicts
  a dense displacement field; :func:`warp` applies it with ``torch.nn.functional.grid_sample``.
  :func:`train_registration` fits it on a volume's neighbouring slice pairs (both directions)
  without labels: local normalised cross-correlation at full and half resolution plus a
  smoothness penalty (Adam, clipped gradients; the best epoch is kept). A checkpoint
  (:func:`checkpoint_to_bytes`, safetensors) records the working size really trained at and is
  fully convolutional, so it can be reused on other volumes.
- :func:`propagate` (:mod:`ml.labelprop.propagation`) carries each annotated slice's signed
  distance maps (one per label) upwards (``Y_up``) and downwards (``Y_down``) through the
  fields composed slice after slice. The
  annotations check the fields: over each gap, a direction that carries one annotation onto the
  next worse than leaving it in place is blended back towards plain shape interpolation and
  weighs less in the fusion. ``Y_fused`` interpolates the two directions' signed distances,
  weighted by the distance to each annotation (``criteria="ncc"``: also by how well each
  direction's warped image matches the slice). Finally, every output is corrected by the
  labels' intensities as the annotated slices show them (inside each label and in a ring
  around it, interpolated between annotated slices): a label may move away from where the
  propagation put it by a margin that grows with the distance to the annotations, where the
  image says so (``propagation._corrected_logits``). Hints are extra annotated slices.

:mod:`ml.volumes_synth` generates the volumes the method is measured on (bench/labelprop.py);
:mod:`ml.labelprop.volumes` holds simpler test volumes, :func:`nearest_slice_labels` and
:func:`sdf_interpolation_labels`, the baselines that :func:`dice` compares against.

The package re-exports every public name of its modules (``from ml.labelprop import propagate``).
"""

from __future__ import annotations

from ml.labelprop.propagation import (
    Propagation,
    merge_hints,
    propagate,
    signed_distance,
)
from ml.labelprop.registration import (
    CHECKPOINT_FORMAT,
    CRITERIA,
    MAX_DISPLACEMENT,
    MAX_SIZE,
    MIN_SIZE,
    REDUCTIONS,
    LabelPropConfig,
    LabelPropError,
    RegistrationNet,
    TrainResult,
    annotated_slices,
    build_net,
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    noise_level,
    normalise_intensities,
    prepare_slices,
    registration_loss,
    train_registration,
    warp,
    working_size,
)
from ml.labelprop.volumes import (
    dice,
    make_volume,
    nearest_slice_labels,
    sdf_interpolation_labels,
    sparse_annotation,
)

__all__ = [
    "MAX_DISPLACEMENT",
    "MAX_SIZE",
    "MIN_SIZE",
    "merge_hints",
    "CHECKPOINT_FORMAT",
    "CRITERIA",
    "REDUCTIONS",
    "LabelPropConfig",
    "LabelPropError",
    "Propagation",
    "RegistrationNet",
    "TrainResult",
    "annotated_slices",
    "build_net",
    "checkpoint_from_bytes",
    "checkpoint_to_bytes",
    "dice",
    "make_volume",
    "nearest_slice_labels",
    "noise_level",
    "normalise_intensities",
    "prepare_slices",
    "propagate",
    "registration_loss",
    "sdf_interpolation_labels",
    "signed_distance",
    "sparse_annotation",
    "train_registration",
    "warp",
    "working_size",
]
