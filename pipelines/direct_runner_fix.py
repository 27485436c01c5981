"""Two measured fixes for the local DirectRunner.

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

Applied only to this process and only for local runs (``pipelines.streaming``).
"""
from __future__ import annotations


def apply() -> None:
    """Memoise DoFn specs per class; no embedded state cache (idempotent)."""
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    from apache_beam.transforms import userstate

    worker_handlers.STATE_CACHE_SIZE_MB = 0

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
