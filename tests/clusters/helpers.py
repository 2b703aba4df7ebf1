"""Test helpers of clusters (used by the tasks tests and the tenancy registry too)."""

from ml.templates import DIGITS_64_128_10

DIGITS_TEMPLATE = DIGITS_64_128_10


def template(inputs: int = 64, hidden: int = 128, outputs: int = 10) -> str:
    return (
        DIGITS_TEMPLATE.replace("64", str(inputs))
        .replace("128", str(hidden))
        .replace("number_of_neurons: 10\n", f"number_of_neurons: {outputs}\n")
    )


def make_cluster(project, user, name: str = "net", text: str = DIGITS_TEMPLATE, seed: int = 1):
    from apps.clusters.services import cluster_create

    return cluster_create(project=project, actor=user, name=name, template_text=text, seed=seed)
