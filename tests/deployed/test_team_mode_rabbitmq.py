"""The same deployment with RabbitMQ as the broker (BROKER_URL=amqp://...): training, requests
and a worker killed mid-training, over HTTP and websockets only."""

import pytest

from tests.deployed.test_team_mode import (  # noqa: F401 - collected again against RabbitMQ
    test_sigkilled_worker_mid_training_resumes_from_its_checkpoint_once,
    test_train_and_request_through_the_workers,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

BROKER = "amqp"
