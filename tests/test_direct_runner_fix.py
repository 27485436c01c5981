"""pipelines.direct_runner_fix: the memoised specs are the runner's own, per class."""
from __future__ import annotations

from apache_beam.transforms import userstate

from pipelines import direct_runner_fix
from transforms.sessionize import SessionizeFn
from transforms.slices import _MergeFn


def test_memoised_specs_equal_the_runners_and_are_per_class():
    before = userstate.get_dofn_specs(SessionizeFn())
    direct_runner_fix.apply()
    direct_runner_fix.apply()  # idempotent
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    assert userstate.get_dofn_specs(SessionizeFn()) == before
    assert transform_evaluator.is_stateful_dofn(SessionizeFn())
    merge = userstate.get_dofn_specs(_MergeFn({}, 10, {}))
    assert {s.name for s in merge[0]} == {"parts", "finals"}
    assert {t.name for t in merge[1]} == {"ts-ranked_final"}
    assert worker_handlers.STATE_CACHE_SIZE_MB == 0
