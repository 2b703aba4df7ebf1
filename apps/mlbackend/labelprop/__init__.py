"""The labelprop half of the mlbackend app: napari-labelprop's server protocol at the root paths
(`/check`, `/inference`, `/training`, ...), backed by `ml.labelprop` on the job engine."""
