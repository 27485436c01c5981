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

8. FnApiRunner stages downstream of such a source (``replay --streaming``): Beam
enqueues every output buffer of a stage for its consumers at +inf
(``_execute_bundle``: ``watermark_pending_inputs`` at ``MAX_TIMESTAMP``) and takes a
PCollection's watermark from one ``set_produced_watermark(MAX_TIMESTAMP)``, set after
the producer's first bundle that leaves no residual and no timers — so the engagement,
ranking and Redis stage ran once, after the whole input (measured: Redis written only
at the end). In a run with a splittable DoFn (other runs keep Beam's scheduler), this
fix schedules by lower bounds instead (:class:`_Flow`):

* every queued input of a stage carries a lower bound ``lb`` of its elements'
  timestamps: ``F(P)`` of its producer taken just before the bundle that wrote it (a
  source's first input: -inf); an SDF residual, the watermark its DoFn reported;
* ``F(S)``, the bound of everything stage S may still output, is the minimum of its
  input bound ``IW(S)`` (the minimum of ``F`` over the stages producing its main
  inputs; +inf when it has none), the ``lb`` of its queued inputs and the holds of its
  unfired timers (held or released); +inf once S and all above it are done;
* output buffers go to their consumers at once (one merged entry per stage, as Beam's
  queue keeps it), except grouping buffers (a GroupByKey) and consumers whose side
  inputs are not complete: those wait, as before, until their producers are done;
* after every bundle, the event-time timers of a transform X of stage S are released
  when ``fire < B(X)``, ``B(X)`` = min(``IW(S)``, ``lb`` of S's queued inputs, holds
  of the unfired timers of the transforms of S upstream of X); all of them once
  ``B(X)`` is +inf (the end, as before); a non-source stage with due timers runs next.
  Residuals
  of several sources are run lowest watermark first, so orders and clicks advance
  together in event time.

Soundness (no element reaches a transform after one of its timers fired at or after
the element's timestamp), under Beam's rule that a DoFn neither outputs nor holds a
timer before its input's timestamp (Java runners enforce it; the Python SDK does not,
and the graph's stateful steps keep it): an element reaching X later is (a) already
queued for S — its ``lb`` is in ``B(X)``; (b) written later by an upstream stage P —
its timestamp is at least ``F(P)`` at that time, and ``F(P)`` never drops below the
``IW(S)`` it bounded (every term of ``F`` only grows until it is consumed, and what
consumes it outputs no earlier, by the rule); or (c) output inside S by an upstream
transform's timer — at least that timer's hold, in ``B(X)`` while it is unfired, and a
timer set later holds at least the timestamp of the element or timer setting it,
itself covered by (a)-(c). So every later element is at least ``B(X)`` > fire. A
source's dead letters at -inf reach only stages without timers, where nothing can be
inverted. If nothing is ready while work is held the run fails (never a silent stall).

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
    _flow_scheduler()
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
#: Per process (fix 8): bundles of stages without a splittable source run while a source
#: still had input to read (``replay --streaming``).
FLOW_STATS = {"early_bundles": 0}


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
        watermark (see 7. above); with fix 8 only stored (:class:`_Flow` releases)."""
        bcm = bundle_context_manager
        watermark = bcm.__dict__.get("shopstream_source_wm", ts_mod.MAX_TIMESTAMP)
        stores = bcm.__dict__.setdefault("shopstream_timers", {})
        flow = bcm.execution_context.__dict__.get("shopstream_flow")
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
            if flow:
                flow.stored(bcm.stage.name, (transform_id, family), store)
                continue
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


class _Node:
    """One stage of a run as :class:`_Flow` sees it."""

    def __init__(self, name):
        self.name = name
        self.producers: set = set()       # stages writing its main inputs
        self.side_producers: set = set()  # stages writing its side inputs
        self.families: list = []          # its event-time timer families
        self.upstream: dict = {}          # family → families of transforms above it
        self.source = False               # holds a splittable DoFn


class _Flow:
    """Fix 8: the scheduler of one FnApiRunner run with a splittable DoFn (module doc).

    ``ready_lb`` / ``pending_lb`` / ``parked``: the lower bound of each queued entry
    (Beam's queues merge one stage's inputs into one entry per key); ``released``: the
    holds of released timers not yet fired; ``mins``: per stored timer family, the
    earliest hold and fire time (the stores themselves are fix 7's)."""

    def __init__(self, ctx, nodes, order):
        from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP

        self.ctx, self.nodes, self.order = ctx, nodes, order
        self.MAX, self.MIN = MAX_TIMESTAMP, MIN_TIMESTAMP
        self.ready_lb: dict = {}
        self.pending_lb: dict = {}   # (stage, MIN: side inputs | MAX: all inputs) → lb
        self.parked: dict = {}       # stage → (residual DataInput, lb)
        self.released: dict = {}     # stage → {family: min hold}
        self.mins: dict = {}         # (stage, family) → (min hold, min fire)
        self.input_keys: dict = {}   # stage → its data input transform ids
        self.running = None          # (stage, lb of the entry it runs)
        self.first = True            # the first entry run was dequeued before this
        q = ctx.queues
        for name, _ in list(q.ready_inputs._q):
            self.ready_lb[name] = MIN_TIMESTAMP
        for (name, wm), _ in list(q.watermark_pending_inputs._q):
            self.pending_lb[(name, wm)] = MIN_TIMESTAMP

    # ------------------------------------------------------------------ construction
    @classmethod
    def of(cls, ctx):
        """The run's flow, or ``False`` when fix 8 does not apply (no splittable DoFn,
        or processing-time timers, which keep Beam's scheduler)."""
        flow = ctx.__dict__.get("shopstream_flow")
        if flow is None:
            flow = ctx.__dict__["shopstream_flow"] = cls._build(ctx) or False
        return flow

    @classmethod
    def _build(cls, ctx):
        from apache_beam.portability import common_urns
        from apache_beam.portability.api import beam_runner_api_pb2
        from apache_beam.runners.portability.fn_api_runner import translations

        sdf = common_urns.sdf_components.PROCESS_SIZED_ELEMENTS_AND_RESTRICTIONS.urn
        stages = list(ctx.stages.values())
        nodes, writer = {}, {}
        for stage in stages:
            node = nodes[stage.name] = _Node(stage.name)
            bcm = ctx.bundle_manager_for(stage)
            for buffer_id in bcm.stage_data_outputs.values():
                writer.setdefault(translations.split_buffer_id(buffer_id)[1], set()).add(stage.name)
            for family, (_, domain) in bcm.stage_timer_outputs.items():
                if domain != beam_runner_api_pb2.TimeDomain.EVENT_TIME:
                    return None
                node.families.append(family)
            node.source = any(t.spec.urn == sdf for t in stage.transforms)
        if not any(n.source for n in nodes.values()):
            return None
        for buffer_id, consumers in ctx.buffer_id_to_consumer_pairs.items():
            for name, _ in consumers:
                nodes[name].producers |= writer.get(translations.split_buffer_id(buffer_id)[1], set())
        for stage in stages:
            node = nodes[stage.name]
            for pcoll in stage.side_inputs():
                node.side_producers |= writer.get(pcoll, set())
            node.upstream = _upstream_families(stage, node.families)
        return cls(ctx, nodes, _topological(nodes, [s.name for s in stages]))

    # ------------------------------------------------------------------ bounds
    def _queued(self, name):
        """The bound of the inputs queued for stage ``name`` (ready, waiting, parked)."""
        low = min(self.ready_lb.get(name, self.MAX),
                  self.parked[name][1] if name in self.parked else self.MAX)
        for (n, _), lb in self.pending_lb.items():
            if n == name:
                low = min(low, lb)
        return low

    def _own(self, name):
        """The bound of the work queued or held by stage ``name`` itself, and whether
        there is any."""
        lows = [self._queued(name)]
        lows += list(self.released.get(name, {}).values())
        lows += [m[0] for (n, _), m in self.mins.items() if n == name]
        busy = (name in self.ready_lb or name in self.parked or bool(self.released.get(name))
                or any(n == name for n, _ in self.pending_lb)
                or any(n == name for n, _ in self.mins))
        if self.running is not None and self.running[0] == name:
            lows.append(self.running[1])
            busy = True
        return min(lows), busy

    def sweep(self):
        """``({stage: F}, {stage: IW}, {stage: done})`` over the stages in order."""
        bound, iw, done = {}, {}, {}
        for name in self.order:
            node = self.nodes[name]
            low, up_done = self.MAX, True
            for p in node.producers:
                low = min(low, bound[p])
                up_done = up_done and done[p]
            own, busy = self._own(name)
            done[name] = up_done and not busy
            iw[name] = self.MAX if up_done else low
            bound[name] = self.MAX if done[name] else min(low, own)
        return bound, iw, done

    # ------------------------------------------------------------------ timers
    def stored(self, name, family, store) -> None:
        """Fix 7's store of ``family`` of stage ``name`` changed."""
        if store:  # compared as integers: Timestamp's comparisons are Python calls
            from apache_beam.utils.timestamp import Timestamp

            timers = store.values()
            self.mins[(name, family)] = (
                Timestamp(micros=min(t.hold_timestamp.micros for t in timers)),
                Timestamp(micros=min(t.fire_timestamp.micros for t in timers)))
        else:
            self.mins.pop((name, family), None)

    def _release(self, iw, done) -> None:
        from apache_beam.coders.coder_impl import create_OutputStream
        from apache_beam.runners.portability.fn_api_runner import execution, fn_runner

        for name in self.order:
            node = self.nodes[name]
            if not node.families or not all(done[p] for p in node.side_producers):
                continue
            bcm = self.ctx.bundle_manager_for(self.ctx.stages[name])
            stores = bcm.__dict__.get("shopstream_timers", {})
            base = min(iw[name], self._queued(name))
            released = self.released.setdefault(name, {})
            for family in node.families:
                m = self.mins.get((name, family))
                if m is None:
                    continue
                b = base
                for up in node.upstream[family]:
                    if (name, up) in self.mins:
                        b = min(b, self.mins[(name, up)][0])
                    if up in released:
                        b = min(b, released[up])
                if b < self.MAX and m[1] >= b:
                    continue
                store = stores[family]
                b_us = b.micros
                due = list(store) if b >= self.MAX else [
                    k for k, t in store.items() if t.fire_timestamp.micros < b_us]
                if b < self.MAX:
                    EVENT_TIME_STATS["released_early"] += len(due)
                    EVENT_TIME_STATS["held_peak"] = max(EVENT_TIME_STATS["held_peak"], len(store))
                coder = bcm.get_timer_coder_impl(*family)
                out = create_OutputStream()
                hold = self.MAX
                for k in due:
                    timer = store.pop(k)
                    hold = min(hold, timer.hold_timestamp)
                    coder.encode_to_stream(timer, out, True)
                self.stored(name, family, store)
                buf = fn_runner.ListBuffer(coder_impl=coder)
                buf.append(out.get())
                released[family] = min(released.get(family, self.MAX), hold)
                empty = {k: fn_runner.ListBuffer(None) for k in self.input_keys[name]}
                ready = self.ctx.queues.ready_inputs
                ready.enque((name, execution.DataInput(empty, {family: buf})))
                if not node.source:
                    # due timers downstream run next, not behind the sources' next chunks
                    # (a source's own wait for its next chunk: one bundle, not a chain)
                    entry = ready._keyed_elements[name]
                    ready._q.remove(entry)
                    ready._q.append(entry)
            if not released:
                del self.released[name]

    # ------------------------------------------------------------------ scheduling
    def advance(self) -> None:
        """Open the waiting entries whose inputs are complete, run the lowest parked
        source residual, release the due timers."""
        bound, iw, done = self.sweep()
        q = self.ctx.queues
        for key in list(self.pending_lb):
            name, wm = key
            node = self.nodes[name]
            ready = all(done[p] for p in node.side_producers) and (
                wm < self.MAX or all(done[p] for p in node.producers))
            if not ready:
                continue
            entry = q.watermark_pending_inputs._keyed_elements.pop(key)
            q.watermark_pending_inputs._q.remove(entry)
            q.ready_inputs.enque((name, entry[1]))
            self.ready_lb[name] = min(self.ready_lb.get(name, self.MAX), self.pending_lb.pop(key))
        if self.parked:
            # sources advance together: a residual waits while another source is behind
            fronts = {n: lb for n, (_, lb) in self.parked.items()}
            for n, node in self.nodes.items():
                if node.source and n in self.ready_lb and n not in fronts:
                    fronts[n] = self.ready_lb[n]
            low = min(fronts.values())
            for name in [n for n, (_, lb) in self.parked.items() if lb <= low]:
                data, lb = self.parked.pop(name)
                q.ready_inputs.enque((name, data))
                self.ready_lb[name] = min(self.ready_lb.get(name, self.MAX), lb)
        self._release(iw, done)

    def schedule(self) -> None:
        """Beam's ``_schedule_ready_bundles`` (called when nothing is ready)."""
        self.advance()
        if not len(self.ctx.queues.ready_inputs) and (
                self.pending_lb or self.parked or self.mins or self.released):
            raise RuntimeError(
                "shopstream direct_runner_fix: nothing is ready but work is held "
                f"(waiting: {sorted(self.pending_lb)}, timers: {sorted(self.mins)})")

    def execute(self, runner, bcm, bundle_input):
        """Beam's ``_execute_bundle`` with the delivery of fix 8 (module doc)."""
        from apache_beam.runners.portability.fn_api_runner import execution, translations

        ctx, name, q = self.ctx, bcm.stage.name, self.ctx.queues
        self.input_keys.setdefault(name, list(bundle_input.data))
        consumed = min(self.ready_lb.pop(name, self.MIN if self.first else self.MAX),
                       min(self.released.pop(name, {}).values(), default=self.MAX))
        self.running, self.first = (name, consumed), False
        bound, _, done = self.sweep()
        out_lb = bound[name]
        if not self.nodes[name].source and any(
                self.nodes[n].source and not done[n] for n in self.order if n != name):
            FLOW_STATS["early_bundles"] += 1

        ctx.worker_handler_manager.register_process_bundle_descriptor(
            bcm.process_bundle_descriptor)
        bundle_manager = runner._get_bundle_manager(bcm)
        last_result, deferred_inputs, newly_set_timers, _ = runner._run_bundle(
            ctx, bcm, bundle_input, bcm.stage_data_outputs, bcm.stage_timer_outputs,
            bundle_manager)
        assert not newly_set_timers  # event-time timers are stored (fix 7) and released here
        if deferred_inputs:
            mark = bcm.__dict__.get("shopstream_source_wm", self.MAX)
            # an SDF residual: the watermark its DoFn reported; a runner split: the input's
            lb = mark if mark < self.MAX else consumed
            if name in self.parked:
                raise RuntimeError(f"two residuals of stage {name}")
            self.parked[name] = (execution.DataInput(deferred_inputs, {}), lb)

        ctx.commit_side_inputs_to_state(ctx.side_input_descriptors_by_stage.get(name, {}))

        # Beam's delivery of the output buffers (a buffer read by two stages is copied),
        # at once unless it groups or its consumer waits for side inputs.
        buffers_to_clean, known_consumers = set(), set()
        for transform_id, buffer_id in bcm.stage_data_outputs.items():
            for consuming_stage, consuming_transform in ctx.buffer_id_to_consumer_pairs.get(
                    buffer_id, []):
                buffer = ctx.pcoll_buffers.get(buffer_id, None)
                if buffer_id in ctx.pcoll_buffers and buffer_id not in buffers_to_clean:
                    buffers_to_clean.add(buffer_id)
                elif buffer and buffer_id in buffers_to_clean:
                    ctx.pcoll_buffers[buffer_id] = buffer.copy()
                    buffer = ctx.pcoll_buffers[buffer_id]
                if buffer_id not in ctx.pcoll_buffers:
                    buffer = bcm.get_buffer(buffer_id, transform_id)
                    ctx.pcoll_buffers[buffer_id] = buffer
                    buffers_to_clean.add(buffer_id)
                if (consuming_stage, consuming_transform, buffer_id) in known_consumers:
                    continue
                known_consumers.add((consuming_stage, consuming_transform, buffer_id))
                data = execution.DataInput({consuming_transform: buffer}, {})
                node = self.nodes[consuming_stage]
                grouping = translations.split_buffer_id(buffer_id)[0] == "group"
                if grouping or not all(done[p] for p in node.side_producers):
                    key = (consuming_stage, self.MAX if grouping else self.MIN)
                    q.watermark_pending_inputs.enque((key, data))
                    self.pending_lb[key] = min(self.pending_lb.get(key, self.MAX), out_lb)
                else:
                    q.ready_inputs.enque((consuming_stage, data))
                    self.ready_lb[consuming_stage] = min(
                        self.ready_lb.get(consuming_stage, self.MAX), out_lb)
        for bid in buffers_to_clean:
            ctx.pcoll_buffers.pop(bid, None)
        self.running = None
        self.advance()
        return last_result


def _upstream_families(stage, families) -> dict:
    """Per timer family of ``stage``: the families of the stage's transforms whose output
    reaches that family's transform inside the stage."""
    made = {}
    for t in stage.transforms:
        for pc in t.outputs.values():
            made[pc] = t.unique_name
    above: dict = {}

    def parents(tid, seen):
        for t in stage.transforms:
            if t.unique_name == tid:
                for pc in t.inputs.values():
                    p = made.get(pc)
                    if p is not None and p not in seen:
                        seen.add(p)
                        parents(p, seen)
        return seen

    for tid, _ in families:
        if tid not in above:
            above[tid] = parents(tid, set())
    return {(tid, fam): [f for f in families if f[0] in above[tid] and f[0] != tid]
            for tid, fam in families}


def _topological(nodes, names) -> list:
    """``names`` ordered so that every stage comes after the stages feeding it."""
    out, seen = [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        for p in sorted(nodes[name].producers | nodes[name].side_producers):
            visit(p)
        out.append(name)

    for name in names:
        visit(name)
    return out


def _flow_scheduler() -> None:
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    if getattr(fn_runner.FnApiRunner._execute_bundle, "by_shopstream", False):
        return
    original_execute = fn_runner.FnApiRunner._execute_bundle
    original_schedule = fn_runner.FnApiRunner._schedule_ready_bundles

    def _execute_bundle(self, runner_execution_context, bundle_context_manager, bundle_input):
        flow = _Flow.of(runner_execution_context)
        if not flow:
            return original_execute(self, runner_execution_context, bundle_context_manager,
                                    bundle_input)
        return flow.execute(self, bundle_context_manager, bundle_input)

    def _schedule_ready_bundles(self, runner_execution_context):
        flow = _Flow.of(runner_execution_context)
        if not flow:
            return original_schedule(self, runner_execution_context)
        return flow.schedule()

    _execute_bundle.by_shopstream = True
    fn_runner.FnApiRunner._execute_bundle = _execute_bundle
    fn_runner.FnApiRunner._schedule_ready_bundles = _schedule_ready_bundles
