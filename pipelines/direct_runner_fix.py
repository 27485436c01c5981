"""Measured fixes for the local DirectRunner.

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
still gets single messages at once and a busy one gets fewer, larger bundles. And a pull
on an idle subscription waits for Beam's 30 s timeout (measured on the emulator: 29 s),
while the runner's watermark (the wall clock at each pull) stands still, so the last
events before a pause waited up to 30 s for their timers; pulls here time out after
:data:`PUBSUB_PULL_TIMEOUT` s (an empty pull returns after ~1 s).

4. BundleBasedDirectRunner timer monitor: after every bundle it asks every key of every
stateful step for its due timers (``extract_transform_timers``), and keys live for the
visit gap plus the dedup TTL, so each pass grows with every session of the last hours
(py-spy: ~18% of a live run's samples at 400 events/s). A key's state object is
replaced, never changed in place, when a bundle commits (``EvaluationContext``
``handle_result``), so the keyed-state dicts here note which keys were assigned, and a
heap of each key's earliest event-time timer yields the keys that are due; only those
(and keys with processing-time timers) are asked.

5. BundleBasedDirectRunner keyed state: every bundle copies the state of each key it
touches, ``copy.deepcopy`` of its timers (~11% of a live run's samples). Timers map
windows and timer names to ``Timestamp`` values, all immutable, so copying the two
dict levels is the same copy.

6. BundleBasedDirectRunner DoFn copies: every bundle of every ParDo starts with a pickle
round trip of its DoFn and a fresh ``DoFnSignature`` (``inspect.signature`` of each
method): ~14% of a live run's samples. Each worker thread here keeps the copy it made
of a DoFn, so later bundles in that thread reuse it — the runner still calls ``setup`` /
``start_bundle`` / ``finish_bundle`` / ``teardown`` around every bundle, as before, and
no copy is shared between threads — and the argument inspection behind the signature
(``core.get_function_arguments``, looked up by the compiled ``DoFnSignature`` at run
time) is remembered per object and method.

7. FnApiRunner event-time timers (``replay --streaming``): the runner keeps the timers a
bundle writes as one buffer per timer family and releases the whole buffer once the
earliest is due, and it ignores the watermark a splittable DoFn reports with its
residual (``output_watermarks``, never read by ``fn_runner.py``). A stage whose input
is one impulse counts as being at +inf, so with a self-checkpointing source every
timer, also those far ahead of the data, would fire after the first checkpoint. Here
the timers of each timer family live in one store per stage (the newest write of a
key and tag wins, a clear removes it), and after each bundle only those due at the
watermark the stage's source reported with its residual are released; the rest wait
(with their watermark holds) for a later checkpoint, and all are released once the
source is done (no residual: the watermark is +inf, as in Beam's own runner). A stage
without a checkpointing source is released at once, which is Beam's behaviour.

Applied only to this process and only for local runs (``pipelines.streaming``).
"""
from __future__ import annotations

import heapq
import threading

#: Messages per Pub/Sub pull of the local runner (Beam's own: 10).
PUBSUB_PULL_MAX = 500
#: Seconds a pull of the local runner waits on an idle subscription (Beam's own: 30).
PUBSUB_PULL_TIMEOUT = 2.0


def apply() -> None:
    """Apply the fixes above to this process (idempotent)."""
    from apache_beam.runners.direct import (
        evaluation_context,
        transform_evaluator,
        watermark_manager,
    )
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    from apache_beam.transforms import core, trigger, userstate

    worker_handlers.STATE_CACHE_SIZE_MB = 0
    _event_time_timers()
    _larger_pubsub_pulls(transform_evaluator._PubSubReadEvaluator)
    _indexed_timer_scan(evaluation_context.EvaluationContext,
                        watermark_manager._TransformWatermarks)
    _cheaper_state_copy(trigger.InMemoryUnmergedState)
    _reuse_dofn_copies(transform_evaluator, core)

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


class _NoMessages:
    """What a pull that timed out returns: no messages (the runner pulls again)."""
    received_messages: tuple = ()


class _LargerPulls:
    """A SubscriberClient whose ``pull`` asks for at least :data:`PUBSUB_PULL_MAX`
    messages and waits at most :data:`PUBSUB_PULL_TIMEOUT` s."""

    def __init__(self, client):
        self._client = client

    def pull(self, *args, max_messages=None, timeout=None, **kwargs):
        from google.api_core import exceptions

        try:
            return self._client.pull(
                *args, max_messages=max(max_messages or 0, PUBSUB_PULL_MAX),
                timeout=min(timeout or PUBSUB_PULL_TIMEOUT, PUBSUB_PULL_TIMEOUT), **kwargs)
        except exceptions.DeadlineExceeded:
            return _NoMessages()

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


def _earliest_watermark_timer(state):
    """``(earliest event-time timer in µs or None, has a processing-time timer)``."""
    from apache_beam.transforms.timeutil import TimeDomain

    earliest, realtime = None, False
    for timers in state.timers.values():
        for (_, domain, _), ts in timers.items():
            if domain == TimeDomain.WATERMARK:
                if earliest is None or ts.micros < earliest:
                    earliest = ts.micros
            else:
                realtime = True
    return earliest, realtime


class _TrackedKeyedStates(dict):
    """One transform's ``{encoded key: state}`` that remembers which keys were assigned
    (a bundle's commit assigns a new state object to every key it touched)."""

    def __init__(self):
        super().__init__()
        self._dirty_lock = threading.Lock()
        self._dirty: set = set()

    def __setitem__(self, key, value):
        with self._dirty_lock:
            super().__setitem__(key, value)
            self._dirty.add(key)

    def take_dirty(self) -> set:
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        return dirty


class _TimerIndex:
    """Per transform: each key's earliest event-time timer, a heap of them, the keys
    whose timers are due, and the keys with processing-time timers."""

    def __init__(self):
        self.earliest: dict = {}
        self.heap: list = []
        self.due: set = set()
        self.realtime: set = set()

    def update(self, key, state) -> None:
        earliest, realtime = _earliest_watermark_timer(state)
        self.earliest[key] = earliest
        self.due.discard(key)
        (self.realtime.add if realtime else self.realtime.discard)(key)
        if earliest is not None:
            heapq.heappush(self.heap, (earliest, key))

    def due_keys(self, watermark_us: int) -> set:
        heap = self.heap
        while heap and heap[0][0] <= watermark_us:
            t, key = heapq.heappop(heap)
            if self.earliest.get(key) == t:
                self.due.add(key)
        return self.due | self.realtime


def _indexed_timer_scan(context_cls, watermarks_cls) -> None:
    if getattr(watermarks_cls.extract_transform_timers, "indexed_by_shopstream", False):
        return
    from apache_beam.runners.direct.util import TimerFiring

    original_init = context_cls._initialize_keyed_states
    original_extract = watermarks_cls.extract_transform_timers

    def _initialize_keyed_states(self, root_transforms, value_to_consumers):
        states = original_init(self, root_transforms, value_to_consumers)
        return {t: _TrackedKeyedStates() for t in states}

    def extract_transform_timers(self):
        """Beam's extraction, asking only the keys whose timers are due (or that have
        processing-time timers) instead of every key."""
        states = self._keyed_states
        if not isinstance(states, _TrackedKeyedStates):
            return original_extract(self)
        with self._lock:
            index = self.__dict__.get("_timer_index")
            if index is None:
                index = self._timer_index = _TimerIndex()
                states.take_dirty()
                dirty = set(states)
            else:
                dirty = states.take_dirty()
            for key in dirty:
                index.update(key, states[key])
            watermark, now = self._input_watermark, self._clock.time()
            fired_timers, has_realtime_timer = [], False
            for key in index.due_keys(watermark.micros):
                timers, had_realtime_timer = states[key].get_timers(
                    watermark=watermark, processing_time=now)
                if had_realtime_timer:
                    has_realtime_timer = True
                for window, (name, time_domain, timestamp, dynamic_timer_tag) in timers:
                    fired_timers.append(TimerFiring(
                        key, window, name, time_domain, timestamp,
                        dynamic_timer_tag=dynamic_timer_tag))
            self._fired_timers.update(fired_timers)
            return fired_timers, has_realtime_timer

    extract_transform_timers.indexed_by_shopstream = True
    context_cls._initialize_keyed_states = _initialize_keyed_states
    watermarks_cls.extract_transform_timers = extract_transform_timers


def _cheaper_state_copy(state_cls) -> None:
    if getattr(state_cls.copy, "cheaper_by_shopstream", False):
        return
    import collections
    import copy as copy_module

    def copy(self):
        """Beam's copy, with the timers copied per level (their keys and values are
        immutable) instead of ``deepcopy``."""
        cloned = state_cls(defensive_copy=self.defensive_copy)
        cloned.timers = collections.defaultdict(
            dict, {w: dict(timers) for w, timers in self.timers.items()})
        if self.global_state:
            cloned.global_state = copy_module.deepcopy(self.global_state)
        for window in self.state:
            for tag in self.state[window]:
                cloned.state[window][tag] = copy_module.copy(self.state[window][tag])
        return cloned

    copy.cheaper_by_shopstream = True
    state_cls.copy = copy


class _ThreadCopies:
    """Beam's pickler, whose ``roundtrip`` (the DirectRunner's per-bundle DoFn copy)
    makes one copy per object and thread and returns it again after that."""

    def __init__(self, pickler):
        self._pickler = pickler
        self._local = threading.local()

    def roundtrip(self, obj):
        copies = self._local.__dict__.setdefault("copies", {})
        hit = copies.get(id(obj))
        if hit is None or hit[0] is not obj:
            hit = copies[id(obj)] = (obj, self._pickler.roundtrip(obj))
        return hit[1]

    def __getattr__(self, name):
        return getattr(self._pickler, name)


def _reuse_dofn_copies(evaluator_module, core_module) -> None:
    if isinstance(evaluator_module.pickler, _ThreadCopies):
        return
    evaluator_module.pickler = _ThreadCopies(evaluator_module.pickler)
    original = core_module.get_function_arguments
    seen: dict = {}
    lock = threading.Lock()

    def get_function_arguments(obj, func):
        """Beam's argument inspection, once per object and method (the DoFn copies above
        are reused, so their methods' signatures are the same every bundle)."""
        key = (id(obj), func)
        with lock:
            hit = seen.get(key)
        if hit is None or hit[0] is not obj:
            hit = (obj, original(obj, func))
            with lock:
                seen[key] = hit
        args, defaults = hit[1]
        return list(args), list(defaults)

    core_module.get_function_arguments = get_function_arguments


#: Per process: how many timers the event-time store released while their stage's source
#: still had input to read, and the most it held at once (``replay --streaming``).
EVENT_TIME_STATS = {"released_early": 0, "held_peak": 0}


def _source_watermark(result):
    """The watermark a bundle's splittable DoFn reported with its residual (the minimum
    over residuals and outputs; -inf for a residual without one), ``None`` when the
    bundle left no residual."""
    from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

    roots = result.process_bundle.residual_roots
    if not roots:
        return None
    marks = [Timestamp.from_proto(ts) for root in roots
             for ts in root.application.output_watermarks.values()]
    return min(marks) if marks else MIN_TIMESTAMP


def _event_time_timers() -> None:
    from apache_beam.coders.coder_impl import create_OutputStream
    from apache_beam.runners.portability.fn_api_runner import fn_runner, translations
    from apache_beam.utils import timestamp as ts_mod

    if getattr(fn_runner.FnApiRunner._collect_written_timers, "by_shopstream", False):
        return
    original_process = fn_runner.BundleManager.process_bundle

    def process_bundle(self, *args, **kwargs):
        result, splits = original_process(self, *args, **kwargs)
        mark = _source_watermark(result)
        self.bundle_context_manager.__dict__["shopstream_source_wm"] = (
            ts_mod.MAX_TIMESTAMP if mark is None else mark)
        return result, splits

    def _collect_written_timers(bundle_context_manager):
        """Beam's collection, through a per-stage store released up to the source's
        watermark (see 7. above)."""
        bcm = bundle_context_manager
        watermark = bcm.__dict__.get("shopstream_source_wm", ts_mod.MAX_TIMESTAMP)
        stores = bcm.__dict__.setdefault("shopstream_timers", {})
        holds, released = {}, {}
        for (transform_id, family) in bcm.stage.timers:
            written = bcm.get_buffer(
                translations.create_buffer_id(family, kind="timers"), transform_id)
            coder = bcm.get_timer_coder_impl(transform_id, family)
            store = stores.setdefault((transform_id, family), {})
            if not written.cleared:
                for chunk in written:
                    for timer in coder.decode_all(chunk):
                        k = (timer.user_key, timer.dynamic_timer_tag, timer.windows[0])
                        if timer.clear_bit:
                            store.pop(k, None)
                        else:
                            store[k] = timer
                written.clear()
            if not store:
                continue
            due = ([k for k, t in store.items() if t.fire_timestamp <= watermark]
                   if watermark < ts_mod.MAX_TIMESTAMP else list(store))
            hold = min(t.hold_timestamp for t in store.values())
            holds[(transform_id, family)] = hold
            if watermark < ts_mod.MAX_TIMESTAMP:
                EVENT_TIME_STATS["released_early"] += len(due)
                EVENT_TIME_STATS["held_peak"] = max(EVENT_TIME_STATS["held_peak"], len(store))
            if not due:
                continue
            out = create_OutputStream()
            for k in due:
                coder.encode_to_stream(store.pop(k), out, True)
            buf = fn_runner.ListBuffer(coder_impl=coder)
            buf.append(out.get())
            released[(transform_id, family)] = (buf, hold)
        return holds, released

    _collect_written_timers.by_shopstream = True
    fn_runner.BundleManager.process_bundle = process_bundle
    fn_runner.FnApiRunner._collect_written_timers = staticmethod(_collect_written_timers)
