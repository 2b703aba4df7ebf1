"""Label Studio ML backend: `/ml/<id>/predict` for a batch of text tasks through the whole gateway
(backend lookup, JSON, label config, featurizer, cached model, protocol answer) versus a bare
Django view doing the same featurizing and forward pass on the same model; and `/health` versus a
bare view answering the same JSON (it must stay far below Label Studio's 1 s timeout)."""

import json
import statistics
import time

from bench import django_env
from bench.harness import Context, Row, row

TEXT_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text">
    <Choice value="Positive"/><Choice value="Negative"/>
  </Choices>
</View>"""
TEMPLATE = """version: 1
settings:
    max_connection_distance: 1
bricks:
    1,1,1
        input: text
        number_of_neurons: 512
    2,1,1
        number_of_neurons: 64
    3,1,1
        output: label
        number_of_neurons: 2
"""

_model = None


def _bare_predict(request):
    from django.http import JsonResponse

    from ml.inference import predict_proba
    from ml.text import hashed_char_ngrams

    tasks = json.loads(request.body)["tasks"]
    x = hashed_char_ngrams([t["data"]["text"] for t in tasks], 512)
    probabilities = predict_proba(_model, x)
    labels = ("Positive", "Negative")
    return JsonResponse(
        {
            "results": [
                {
                    "result": [
                        {
                            "from_name": "sentiment",
                            "to_name": "text",
                            "type": "choices",
                            "value": {"choices": [labels[int(p.argmax())]]},
                        }
                    ],
                    "score": float(p.max()),
                }
                for p in probabilities
            ]
        }
    )


def _bare_health(request):
    from django.http import JsonResponse

    return JsonResponse({"status": "UP", "model_class": "Bare"})


urlpatterns: list = []


@row("labelstudio")
def labelstudio(ctx: Context) -> list[Row]:
    global _model, urlpatterns
    vendor = django_env.setup()
    from django.test import Client, override_settings
    from django.urls import include, path

    from apps.accounts.models import User
    from apps.accounts.services import project_create
    from apps.clusters.runtime import cluster_load_model
    from apps.clusters.services import cluster_create
    from apps.mlbackend.labelstudio.services import backend_create

    urlpatterns = [
        path("bare/predict", _bare_predict),
        path("bare/health", _bare_health),
        path("", include("config.urls")),
    ]
    owner = User.objects.create_user("bench-ls", password="x" * 12)
    project = project_create(actor=owner, name="bench-ls")
    cluster = cluster_create(
        project=project, actor=owner, name="text", template_text=TEMPLATE, seed=0
    )
    backend = backend_create(
        project=project, actor=owner, name="bench", cluster=cluster, label_config=TEXT_CONFIG
    )
    _model = cluster_load_model(cluster)
    batch = 8 if ctx.quick else 32
    words = ["great", "awful", "film", "boring", "lovely", "plot", "acting", "dull"]
    tasks = [
        {"id": i, "data": {"text": " ".join(words[(i + k) % 8] for k in range(12))}}
        for i in range(batch)
    ]
    body = json.dumps({"tasks": tasks, "project": "1.1", "label_config": TEXT_CONFIG})
    requests = 10 if ctx.quick else 100
    client = Client()

    with override_settings(ROOT_URLCONF="bench.labelstudio", ALLOWED_HOSTS=["*"]):

        def timed(method, url):
            call = (
                (lambda: client.post(url, body, content_type="application/json"))
                if method == "post"
                else (lambda: client.get(url))
            )
            assert call().status_code == 200
            samples = []
            for _ in range(requests):
                start = time.perf_counter()
                call()
                samples.append(time.perf_counter() - start)
            return statistics.median(samples)

        measured = {"predict": ([], []), "health": ([], [])}
        for _ in range(ctx.repeats):
            measured["predict"][0].append(timed("post", f"/ml/{backend.pk}/predict"))
            measured["predict"][1].append(timed("post", "/bare/predict"))
            measured["health"][0].append(timed("get", f"/ml/{backend.pk}/health"))
            measured["health"][1].append(timed("get", "/bare/health"))
    project.delete()
    owner.delete()
    return [
        Row(
            "labelstudio.predict",
            f"{batch} text tasks per request, {vendor}",
            statistics.median(measured["predict"][0]) * 1e3,
            statistics.median(measured["predict"][1]) * 1e3,
            "ms",
            notes="gateway (lookup, config, featurizer, cached model) vs bare view, same model",
        ),
        Row(
            "labelstudio.health",
            f"GET /health, {vendor}",
            statistics.median(measured["health"][0]) * 1e3,
            statistics.median(measured["health"][1]) * 1e3,
            "ms",
            goal="far below Label Studio's 1 s",
            notes="backend lookup + JSON vs a bare JSON view",
        ),
    ]
