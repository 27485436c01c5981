"""One measured fix for the local DirectRunner (BundleBasedDirectRunner, the runner of
`shopstream stream` on a laptop and of the streaming tests): it re-derives every
DoFn's state and timer specs — ``inspect.signature`` of every method — for every ParDo
of every bundle (``should_execute_serially``, ``_ParDoEvaluator.start_bundle``). With
Pub/Sub delivering bundles of 10 messages that dominated the live graph's cost (py-spy:
~45% of busy time on 2 cores, against ~3% spent in DoFn code).

Specs are declared on the DoFn class (the defaults of its methods' parameters), so they
are memoised per class here. Applied only to this process and only for local runs.
"""
from __future__ import annotations



def apply() -> None:
    """Memoise ``get_dofn_specs`` / ``is_stateful_dofn`` per DoFn class (idempotent)."""
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.transforms import userstate

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
