"""`stored_input_scale`: the one reading of a model's recorded input scale (checkpoint metadata,
an export's network, a cluster's config) with the fallbacks its callers had each written."""

from __future__ import annotations

import pytest

from apps.clusters.models import Cluster
from apps.clusters.selectors import stored_input_scale


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (None, None),
        ({}, None),
        ({"input_scale": 0.25}, 0.25),
        ({"input_scale": 0.25, "config": {"input_scale": 0.5}}, 0.25),
        # A checkpoint whose metadata carries its cluster's config, recorded before the scale.
        ({"config": {"input_scale": 0.5}}, 0.5),
        ({"input_scale": None, "config": {"input_scale": 0.5}}, 0.5),
        ({"input_scale": 0, "config": None}, None),
        ({"input_scale": 2}, 2.0),
    ],
)
def test_metadata_and_networks_read_their_own_scale_then_their_configs(metadata, expected):
    for given in ({"checkpoint_metadata": metadata}, {"network": metadata}):
        found = stored_input_scale(**given)
        assert found == expected and (found is None or isinstance(found, float))


@pytest.mark.parametrize(
    ("config", "expected"),
    [(None, None), ({}, None), ({"input_scale": 0.0}, None), ({"input_scale": 0.125}, 0.125)],
)
def test_a_cluster_reads_its_config(config, expected):
    assert stored_input_scale(cluster=Cluster(config=config)) == expected


def test_checkpoint_metadata_comes_before_its_cluster():
    cluster = Cluster(config={"input_scale": 0.5})
    assert stored_input_scale(cluster=cluster, checkpoint_metadata={"input_scale": 0.25}) == 0.25
    assert stored_input_scale(cluster=cluster, checkpoint_metadata={}) == 0.5
    assert stored_input_scale(cluster=cluster, network={"config": {}}) == 0.5
