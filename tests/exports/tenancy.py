"""URL kwargs of the export routes, for the cross-tenant test (tests/test_tenancy.py)."""

from tests.clusters.helpers import make_cluster


def _export(project, user) -> str:
    """A completed, downloadable export in `project` (its file written here, not by a worker)."""
    from apps.core.tenancy import project_access
    from apps.exports import services
    from apps.exports.models import Export
    from apps.exports.selectors import export_dir, export_source_get

    access = project_access(user=user, project_id=project.pk)
    source = export_source_get(access=access, cluster_id=make_cluster(project, user).pk)
    export = services.export_create(project=project, actor=user, source=source, fmt="safetensors")
    directory = export_dir(export)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.safetensors").write_bytes(b"secret weights")
    Export.objects.filter(pk=export.pk).update(status="completed", file="model.safetensors")
    return export.pk


URL_KWARGS = {"export_id": _export}
