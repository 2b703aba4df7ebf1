"""The Hanami-compatible REST gateway (`/control/v1/...`), one module per group of routes.

Protocol: /work/shared/protocols/hanami.md. Bodies are JSON without a Content-Type, GET/DELETE take
query strings, the token comes raw in `X-Auth-Token`, and the project of project-scoped routes is
the token's `project_id` claim. Input is validated by `apps.hanami.serializers`, answers are built
by `apps.hanami.answers`, errors are rendered by `apps.hanami.http`.
"""
