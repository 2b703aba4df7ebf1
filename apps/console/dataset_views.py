"""The console's dataset pages: a dataset's summary with its class distribution (SVG), its
thumbnails, samples and volume slices (PNG). Resolved and rendered with the plumbing of
`apps.console.views`."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.urls import reverse

from apps.console import charts, images
from apps.console.views import PAGE_SIZE, _int, _page, _png, _resolve, _svg
from apps.core.exceptions import OrchardError


def _dataset(request, dataset_id):
    from apps.datasets import selectors
    from apps.datasets.models import Dataset

    return _resolve(
        request,
        Dataset,
        dataset_id,
        lambda a: selectors.dataset_get(access=a, dataset_id=dataset_id),
    )


def _arrays(dataset):
    from apps.datasets import selectors

    try:
        return selectors.dataset_arrays(dataset)
    except OrchardError as exc:
        raise Http404(exc.message) from None


def _class_names(dataset) -> list[str]:
    names = [str(n) for n in (dataset.class_names or [])]
    return names or [str(i) for i in range(int(dataset.num_classes or 0))]


def _labels_1d(labels) -> np.ndarray | None:
    if labels is None or getattr(labels, "ndim", 0) != 1:
        return None
    return np.asarray(labels)


def dataset_detail(request, site, dataset_id):
    from apps.datasets import selectors
    from apps.datasets.models import Dataset

    access, dataset = _dataset(request, dataset_id)
    context: dict[str, Any] = {"dataset": dataset, "project": access.project}
    chosen_class = request.GET.get("class") or ""
    context["chosen_class"] = chosen_class
    page_number = _int(request.GET.get("page"), 1)
    if dataset.kind == Dataset.Kind.IMAGES:
        splits = list(selectors.split_list(access=access, dataset=dataset))
        split_index = _int(request.GET.get("split"))
        split = next((s for s in splits if s.index == split_index), None)
        if split is None and splits and request.GET.get("split") is None:
            split = splits[0]
        items = selectors.image_list(dataset=dataset, filter_class=chosen_class or None)
        page = Paginator(items, PAGE_SIZE).get_page(page_number)
        tiles = [
            {
                "picture": reverse("admin:console-dataset-thumb", args=[dataset.pk, item.pk]),
                "caption": item.filename,
                "label": item.class_name,
                "split": (
                    item.splits[split.index]
                    if split is not None and split.index < len(item.splits or [])
                    else ""
                ),
            }
            for item in page.object_list
        ]
        stats = selectors.dataset_stats(dataset)
        context.update(
            splits=splits,
            split=split,
            page=page,
            tiles=tiles,
            classes=[c["name"] for c in stats["classes"]],
        )
    elif dataset.kind == Dataset.Kind.VOLUME:
        inputs, labels = _arrays(dataset)
        count = int(inputs.shape[0]) if inputs.ndim >= 4 else 1
        volume = min(max(0, _int(request.GET.get("volume"), 0)), count - 1)
        depth = int(inputs.shape[1] if inputs.ndim >= 4 else inputs.shape[0])
        context.update(
            volumes=list(range(min(count, 50))),
            volume=volume,
            has_labels=labels is not None and getattr(labels, "ndim", 0) == inputs.ndim,
            slices=[
                {
                    "index": k,
                    "picture": reverse("admin:console-dataset-slice", args=[dataset.pk, volume, k]),
                }
                for k in images.slice_indices(depth)
            ],
        )
    elif dataset.status == Dataset.Status.READY:
        inputs, labels = _arrays(dataset)
        names = _class_names(dataset)
        flat = _labels_1d(labels)
        indices = np.arange(int(inputs.shape[0]))
        if chosen_class and flat is not None and chosen_class in names:
            indices = np.flatnonzero(flat == names.index(chosen_class))
        page = Paginator(indices, PAGE_SIZE).get_page(page_number)
        has_picture = inputs.shape[0] > 0 and images.as_picture(inputs[0]) is not None
        tiles = []
        for i in np.asarray(page.object_list).tolist():
            label = ""
            if flat is not None:
                value = int(flat[i])
                label = names[value] if 0 <= value < len(names) else str(value)
            tiles.append(
                {
                    "picture": (
                        reverse("admin:console-dataset-sample", args=[dataset.pk, i])
                        if has_picture
                        else None
                    ),
                    "caption": f"#{i}",
                    "label": label,
                    "split": "",
                }
            )
        context.update(page=page, tiles=tiles, classes=names if flat is not None else [])
    context["has_distribution"] = bool(context.get("classes"))
    return _page(request, site, "dataset.html", f"Dataset {dataset.name}", **context)


def dataset_distribution(request, site, dataset_id):
    from apps.datasets import selectors
    from apps.datasets.models import Dataset

    _access, dataset = _dataset(request, dataset_id)
    if dataset.kind == Dataset.Kind.IMAGES:
        bars = [(c["name"], c["count"]) for c in selectors.dataset_stats(dataset)["classes"]]
    else:
        _inputs, labels = _arrays(dataset)
        flat = _labels_1d(labels)
        names = _class_names(dataset)
        bars = []
        if flat is not None and flat.size:
            counts = np.bincount(np.clip(flat.astype(np.int64), 0, None), minlength=len(names))
            bars = [(names[i] if i < len(names) else str(i), int(c)) for i, c in enumerate(counts)]
    return _svg(charts.bar_chart(bars, title="images per class"))


def dataset_thumb(request, site, dataset_id, item_id):
    from apps.datasets import selectors

    _access, dataset = _dataset(request, dataset_id)
    item = dataset.items.filter(pk=_int(item_id, -1)).first()
    if item is None:
        raise Http404("Image not found.")
    item.dataset = dataset
    try:
        path, content_type = selectors.image_thumbnail(item)
    except (OrchardError, OSError):
        raise Http404("This image has no thumbnail.") from None
    response = FileResponse(open(path, "rb"), content_type=content_type)
    response["Cache-Control"] = "private, max-age=300"
    return response


def dataset_sample(request, site, dataset_id, index):
    _access, dataset = _dataset(request, dataset_id)
    inputs, _labels = _arrays(dataset)
    index = int(index)
    if not 0 <= index < inputs.shape[0]:
        raise Http404("No such sample.")
    return _png(images.sample_png(inputs[index]))


def dataset_slice(request, site, dataset_id, volume, index):
    from apps.datasets.models import Dataset

    _access, dataset = _dataset(request, dataset_id)
    if dataset.kind != Dataset.Kind.VOLUME:
        raise Http404("Not a volume dataset.")
    inputs, labels = _arrays(dataset)
    if inputs.ndim == 3:
        inputs = inputs[None]
        labels = labels[None] if labels is not None and labels.ndim == 3 else None
    volume, index = int(volume), int(index)
    if inputs.ndim != 4 or not 0 <= volume < inputs.shape[0]:
        raise Http404("No such volume.")
    if not 0 <= index < inputs.shape[1]:
        raise Http404("No such slice.")
    mask = labels[volume] if labels is not None and labels.ndim == 4 else None
    return _png(images.slice_png(inputs[volume], mask, index))
