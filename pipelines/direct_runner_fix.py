"""Three measured fixes for the local DirectRunner.

1. BundleBasedDirectRunner (BundleBasedDirectRunner, the runner of
`shopstream stream` on a laptop and of the streaming tests): it re-derives every
DoFn's state and timer specs — ``inspect.signature`` of every method — for every ParDo
of every bundle (``should_execute_serially``, ``_ParDoEvaluator.start_bundle``). With
Pub/Sub delivering bundles of 10 messages that dominated the live graph's cost (py-spy:
~45% of busy time on 2 cores, against ~3% spent in DoFn code).

Specs are declared on the DoFn class (the defaults of its methods' parameters), so they
are memoised per class here.

2. FnApiRunner in this process (``replay --streaming``): its embedded SDK worker caches
state with a fixed 100 MB ``StateCache`` that sizes every put with objsize, which first
collects the ids of every loaded module's globals — ~7 ms a put here, 58% of a
``replay --streaming`` run (py-spy). The state lives in the same process anyway, so
the cache is turned off (``STATE_CACHE_SIZE_MB = 0``): reads go to the in-memory state.

3. BundleBasedDirectRunner Pub/Sub read: it pulls ``max_messages=10`` per bundle, and
every bundle then crosses the whole graph (per-bundle cost set the live rate: ~570
messages/s at most, far less with the live graph behind it). Pulls here ask for up to
:data:`PUBSUB_PULL_MAX` messages: a bundle holds what has arrived since the last pull
(Pub/Sub returns what it has; it does not wait for a full batch), so a quiet stream
still gets single messages at once and a busy one gets fewer, larger bundles.

Applied only to this process and only for local runs (``pipelines.streaming``).
"""
from __future__ import annotations

#: Messages per Pub/Sub pull of the local runner (Beam's own: 10).
PUBSUB_PULL_MAX = 500


def apply() -> None:
    """Memoise DoFn specs per class; no embedded state cache; larger Pub/Sub pulls
    (idempotent)."""
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    from apache_beam.transforms import userstate

    worker_handlers.STATE_CACHE_SIZE_MB = 0
    _larger_pubsub_pulls(transform_evaluator._PubSubReadEvaluator)

    if getattr(userstate.get_dofn_specs, "memoised_by_shopstream", False):
        return
    original = userstate.get_dofn_specs
    cache: dict = {}

    def get_dofn_specs(dofn):
        specs = cache.get(type(dofn))
        if specs is None:
            specs = cache[type(dofn)] = original(dofn)
        return specs

    def is_stateful_dofn(dofn):
        state, timers = get_dofn_specs(dofn)
        return bool(state or timers)

    get_dofn_specs.memoised_by_shopstream = True
    # direct_userstate and the DirectRunner's visitors call userstate.get_dofn_specs;
    # transform_evaluator imported the names.
    userstate.get_dofn_specs = get_dofn_specs
    userstate.is_stateful_dofn = is_stateful_dofn
    transform_evaluator.get_dofn_specs = get_dofn_specs
    transform_evaluator.is_stateful_dofn = is_stateful_dofn


class _LargerPulls:
    """A SubscriberClient whose ``pull`` asks for at least :data:`PUBSUB_PULL_MAX`."""

    def __init__(self, client):
        self._client = client

    def pull(self, *args, max_messages=None, **kwargs):
        return self._client.pull(*args, max_messages=max(max_messages or 0, PUBSUB_PULL_MAX),
                                 **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def _larger_pubsub_pulls(evaluator) -> None:
    if getattr(evaluator._get_subscriber_client, "larger_pulls_by_shopstream", False):
        return
    original = evaluator._get_subscriber_client.__func__

    def _get_subscriber_client(cls, transform):
        return _LargerPulls(original(cls, transform))

    _get_subscriber_client.larger_pulls_by_shopstream = True
    evaluator._get_subscriber_client = classmethod(_get_subscriber_client)
