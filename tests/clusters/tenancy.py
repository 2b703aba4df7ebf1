from tests.clusters.helpers import make_cluster


def _checkpoint(project, user):
    from apps.clusters.services import checkpoint_save

    return str(checkpoint_save(cluster=make_cluster(project, user), actor=user, name="cp").pk)


URL_KWARGS = {
    "cluster_id": lambda project, user: str(make_cluster(project, user).pk),
    "checkpoint_id": _checkpoint,
}
