"""Elements that cross a shuffle, counted on a finished run of a built graph.

A shuffle is a GroupByKey or a stateful ParDo (keyed state: the runner moves every input
element to its key's worker). The count of a shuffle is the element count of its input
PCollection as the runner reports it (``beam:metric:element_count:v1``, FnApiRunner)."""
from __future__ import annotations

from typing import Dict

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

GBK = common_urns.primitives.GROUP_BY_KEY.urn
PAR_DO = common_urns.primitives.PAR_DO.urn
ELEMENT_COUNT = common_urns.monitoring_info_specs.ELEMENT_COUNT.spec.urn


def shuffle_inputs(proto) -> Dict[str, str]:
    """``{transform name: input PCollection id}`` of every shuffle in a pipeline proto."""
    out = {}
    for t in proto.components.transforms.values():
        if t.subtransforms:
            continue
        keyed = t.spec.urn == GBK
        if t.spec.urn == PAR_DO:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
            keyed = bool(payload.state_specs or payload.timer_family_specs)
            main = [k for k in t.inputs if k not in payload.side_inputs]
        else:
            main = list(t.inputs)
        if keyed and main:
            out[t.unique_name] = t.inputs[main[0]]
    return out


def shuffled_elements(result, proto) -> Dict[str, int]:
    """``{transform name: elements in}`` for every shuffle of a finished FnApiRunner run."""
    counts: Dict[str, int] = {}
    for mi in result.monitoring_infos():
        if mi.urn == ELEMENT_COUNT:
            pc = mi.labels.get("PCOLLECTION")
            from apache_beam.metrics.monitoring_infos import extract_counter_value
            counts[pc] = max(counts.get(pc, 0), extract_counter_value(mi))
    return {name: counts.get(pc, 0) for name, pc in shuffle_inputs(proto).items()}
