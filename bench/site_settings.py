"""Settings of a bench deployment: the deployment's own settings (BENCH_SITE_BASE, default
`config.settings.prod`) plus the bench's routes (`bench.site_urls`: the bare baselines served by
the same process) and a middleware that reports each request's SQL query count in a header.

Start a deployment with DJANGO_SETTINGS_MODULE=bench.site_settings in `extra_env`."""

import importlib
import os

_base = importlib.import_module(os.environ.get("BENCH_SITE_BASE", "config.settings.prod"))
globals().update({name: value for name, value in vars(_base).items() if name.isupper()})

ROOT_URLCONF = "bench.site_urls"
# Outermost, so it counts every query of the request: authentication, tenancy, the list.
MIDDLEWARE = ["bench.site_urls.QueryCountMiddleware", *_base.MIDDLEWARE]
