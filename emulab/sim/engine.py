"""One simulated run: PUs with FIFO queues, PEs with processor sharing, PLU selection via rserpool.

The model follows the emulated CalcApp code it is compared with — ``rserpool.services.calcapp``
(the PE), ``rserpool.services.calcapp_pu`` (the PU) and ``rserpool.pu.PoolSession`` (its session
layer), which in turn follow RSPLIB 3.4.4's ``calcappservice.cc`` / ``calcappclient.cc`` — and
takes every timer from the constants those modules use (``RunParams``' defaults), so there is one
source of truth:

* each PU issues requests with random sizes at random intervals (first one after one interval),
  queues them FIFO and serves one at a time;
* dequeuing starts the *start-up*: a handle resolution at the PU's registrar, which runs the pool's
  policy (``rserpool.policy.SelectionPool``, C selector, up to ``RegistrarConfig.max_hr_items`` = 3
  elements); the PU takes the first one it has not excluded (``PoolSession.open``: if every returned
  element is excluded it resolves afresh, then asks for ``len(tried) + MORE_ITEMS`` elements, then
  gives up — ``NoPoolElementError`` — and tries again after ``RETRY_DELAY``), and sends its request
  over a new association;
* a PE accepts while it runs fewer than ``max_requests`` jobs and shares its capacity equally
  among them (processor sharing); otherwise it rejects. On a reject the PU waits ``RETRY_DELAY``
  (1 s) and then selects again *excluding the element that rejected* (``CalcAppPU._handle``);
* a PE reports load = jobs / max jobs (``CalcAppServer._report_load``) on every accept and
  completion; the report reaches the PU's registrar after the load-update delay;
* ``accepted_at`` is the first Accept (as ``calcapp_pu.Request``); with faults every Accept is kept
  (``RunResult.accepts``) for the fail-over timeline.

Faults (optional): element crashes and UE coverage losses, on the emulation's timeline.

* PUs notice a silent PE by CalcApp keep-alive (``KEEPALIVE_INTERVAL`` / ``KEEPALIVE_TIMEOUT``,
  2.5 s / 2.5 s): messages from a working PE arrive every interval + RTT, so the PU gives up
  interval + timeout after the last one. Before an Accept that means "lost": a new session at once,
  no report; after one it is a fail-over: an Endpoint Unreachable report, a re-selection without
  the failed PE and the request resumed from the last cookie that reached the PU (the PE sends one
  every ``COOKIE_MAX_TIME`` s or ``COOKIE_MAX_CALCULATIONS``), or restarted without one. After
  ``max_failovers`` fail-overs, or when a fail-over finds no PE, the session ends and a new one
  starts from scratch (``CalcAppPU._run_job``'s "lost").
* Connecting to a PE that does not answer (crashed, or behind a radio that drops every packet)
  takes the PU's ``connect_timeout`` (3 s); one the UE has no route to (after the radio link
  failure) fails at once. Either way the PU reports it unreachable and tries the next one, at most
  8 attempts per session opening. With ``PUConfig.watch_routes`` (rserpool.pu's route watcher) the
  route's withdrawal also ends, at that moment, every session and connect under way to an element
  beyond the radio: the PU fails over at the RLF instead of at its keep-alive or connect timeout.
  The registrar drops a PE after ``max_bad_pe_reports`` (3) reports, or a crashed one after its
  endpoint keep-alive fails (``registrar_detect_s``).
* A coverage loss at L (``radio.emulated``, timers ``model.radio``): from L the UE's packets to and
  from remote elements are lost; at L + N310 × 10 ms + T310 (1.2 s) the radio link fails and the
  UE's routes are withdrawn; elements on the UE are never affected. The UE's registrar keeps the
  remote elements until reports remove them, or until its ENRP peers are declared dead and their
  entries taken over and dropped (``partition_detect_s``). Coverage back at R: the UE re-attaches
  (``RadioTimers.reattach_s``, 1.01 s) and its registrar learns the remote elements again with
  the next ENRP Presence of their registrars (uniform within a heartbeat cycle) plus a round trip.
  Jobs on remote elements keep running there (unseen) until the PE's own keep-alive drops them.
* ``sample_interval_s`` (``emulab simulate``: the emulated PEs' 1 s), every element's
  cumulative used calculations and running jobs are sampled on that period (``RunResult.samples``,
  the results' ``elements_timeline.csv``); sampling reads the state and changes nothing.
* ``drain_s``: as ``emulab experiment coverage-loss --drain``, no new requests after ``duration``
  and up to ``drain_s`` more seconds for the queued ones; the run's length is then the time the
  last one completed (or duration + drain).

Limits: the PUs' registrar is taken to be reachable during a coverage loss (it runs on the UE in
the papers' topology), and jobs left running on a cut-off element are accounted as if they had
the element to themselves.

The loop is lean on purpose: events are plain tuples on a heapq, ``(time, sequence, kind, subject,
token, …)``, dispatched to one ``Simulation`` method per kind; requests and elements are integer
indexes into per-request and per-element columns (lists), and a PE's completion is recomputed only
when its own job set changes (stale completion events are skipped by a per-element version number,
stale request events by a per-request token). Everything only faults need lives in dicts touched
only when ``faults`` is true, so the papers' sweep pays nothing for it. The run's inputs and outputs
are in ``emulab.sim.runs``, the columns in ``emulab.sim.state``, the fault timeline in
``emulab.sim.faults``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from heapq import heappop, heappush
from itertools import count

from emulab.sim import faults as fault
from emulab.sim.faults import DONE_EPSILON, fault_schedule
from emulab.sim.model import PoolModel
from emulab.sim.runs import (
    OPEN_ATTEMPTS,
    STATUS_COMPLETED,
    STATUS_LOST,
    STATUS_NAMES,
    STATUS_UNFINISHED,
    CoverageLoss,
    Failure,
    RunParams,
    RunResult,
)
from emulab.sim.state import RunState
from rserpool.pu import MORE_ITEMS

__all__ = [
    "OPEN_ATTEMPTS", "STATUS_COMPLETED", "STATUS_LOST", "STATUS_NAMES", "STATUS_UNFINISHED",
    "CoverageLoss", "Failure", "RunParams", "RunResult", "Simulation", "simulate_run",
]

# event kinds (the index of their handler in ``Simulation.handlers``), ordered roughly by frequency
(ARRIVAL, AT_ELEMENT, ELEMENT_DONE, COMPLETE, LOAD_REPORT, REJECT, RETRY, ACCEPT, KEEPALIVE_TIMEOUT,
 CONNECT_FAILED, FAULT) = range(11)


class Simulation(RunState):
    """One run of ``params.setting`` PUs on ``model``'s pool; ``run()`` plays it and returns its result.

    The state lives in ``RunState``'s columns; every event kind has its ``on_…`` method, every fault
    step its ``fault_…`` method.
    """

    __slots__ = ("fault_handlers", "fault_steps", "handlers", "heap", "sequence")

    def __init__(self, model: PoolModel, params: RunParams) -> None:
        super().__init__(model, params)
        # ---- the event queue: its handlers, indexed by kind
        self.heap: list[tuple] = []
        self.sequence = count()  # ties between equal times go in scheduling order
        self.handlers: tuple[Callable[[tuple], None], ...] = (
            self.on_arrival, self.on_request_at_element, self.on_element_done, self.on_complete,
            self.on_load_report, self.on_reject, self.on_retry, self.on_accept, self.on_keepalive_timeout,
            self.on_connect_failed, self.on_fault,
        )
        for i in range(self.pu_count):
            t = self.next_interval[i]()
            if t < params.duration:
                heappush(self.heap, (t, next(self.sequence), ARRIVAL, i, 0))
        self.fault_steps: list[tuple[Callable[[float, int], None], int]] = []
        self.fault_handlers: dict[str, Callable[[float, int], None]] = {
            fault.CRASH: self.fault_crash, fault.UNREGISTER: self.fault_unregister,
            fault.RECOVER: self.fault_recover, fault.CUT: self.fault_coverage_cut,
            fault.RADIO_LINK_FAILURE: self.fault_radio_link_failure, fault.REACH: self.fault_coverage_back,
            fault.RELEARN: self.fault_relearn, fault.PARTITION: self.fault_partition,
        }
        for at, step, element in fault_schedule(model, params):
            self.fault_at(at, step, element)

    # ------------------------------------------------------------------ the loop

    def run(self) -> RunResult:
        """Play every event up to the end (``duration`` + drain) and collect the result (once)."""
        heap = self.heap
        handlers = self.handlers
        end_limit = self.end_limit
        next_sample = self.next_sample
        events = 0
        while heap:
            event = heappop(heap)
            now = event[0]
            if now > end_limit:
                break
            if now >= next_sample:
                next_sample = self.sample_until(now)
            events += 1
            handlers[event[2]](event)
        # the handler tables hold bound methods: drop them, so that the run's columns go with the
        # last reference to it rather than at the next garbage collection
        self.handlers, self.fault_handlers, self.fault_steps = (), {}, []
        return self.result(events)

    # ------------------------------------------------------------------ events, one method per kind

    def on_arrival(self, event: tuple) -> None:
        """A PU's next request: queue it, start it if the PU is idle, schedule the one after."""
        now, i = event[0], event[3]
        r = len(self.request_pu)
        self.request_pu.append(i)
        size = float(max(1, round(self.next_size[i]())))  # as calcapp_pu: at least one calculation
        self.request_size.append(size if size >= 1.0 else 1.0)
        self.queued_at.append(now)
        self.started_at.append(None)
        self.accepted_at.append(None)
        self.completed_at.append(None)
        self.completed_by.append(-1)
        self.target.append(-1)
        self.token.append(0)
        self.pu_queue[i].append(r)
        if self.pu_current[i] < 0:
            self.start_next(i, now)
        t = now + self.next_interval[i]()
        if t < self.duration:
            heappush(self.heap, (t, next(self.sequence), ARRIVAL, i, 0))

    def on_request_at_element(self, event: tuple) -> None:
        """The request (or Cookie Echo) reaches its element: accepted if it has room, else rejected."""
        now, r = event[0], event[3]
        token = self.token[r]
        if event[4] != token:
            return
        e = self.target[r]
        faults = self.faults
        if faults and not (self.element_up[e] and (self.link_up or self.on_ue[e])):
            # lost with the PE or the radio: the PU hears nothing after sending it
            self.timeout_at(r, now - self.one_way[e] + self.silence)
            return
        jobs = self.element_jobs[e]
        if len(jobs) < self.max_jobs[e]:
            self.advance(e, now)
            jobs.append(r)
            self.element_accepted[e] += 1
            if faults:
                done = self.resume_from.pop(r, 0.0)
                self.element_remaining[e].append(self.request_size[r] - done)
                self.cookie_time[r] = now
                self.cookie_done[r] = done
                self.cookie_previous_done[r] = done
                self.job_accepted_at[r] = now
                heappush(self.heap, (now + self.one_way[e], next(self.sequence), ACCEPT, r, token))
            else:
                self.element_remaining[e].append(self.request_size[r])
                self.accepted_at[r] = now + self.one_way[e]  # without faults a request is accepted once
            self.reschedule(e, now)
            self.report_load(e, now)
        else:
            self.element_rejected[e] += 1
            heappush(self.heap, (now + self.one_way[e], next(self.sequence), REJECT, r, token))

    def on_element_done(self, event: tuple) -> None:
        """An element's earliest job(s) finish: the Complete leaves for the PU."""
        now, e = event[0], event[3]
        if event[4] != self.element_version[e]:
            return
        self.advance(e, now)
        jobs = self.element_jobs[e]
        remaining = self.element_remaining[e]
        one_way = self.one_way[e]
        k = 0
        while k < len(jobs):
            if remaining[k] <= DONE_EPSILON:
                r = jobs[k]
                self.element_used[e] += remaining[k]  # give back the float overshoot
                del jobs[k]
                del remaining[k]
                self.completed_by[r] = e
                heappush(self.heap, (now + one_way, next(self.sequence), COMPLETE, r, self.token[r]))
            else:
                k += 1
        self.reschedule(e, now)
        self.report_load(e, now)

    def on_complete(self, event: tuple) -> None:
        """The Complete reaches the PU: the request is done, the PU starts its next one."""
        now, r = event[0], event[3]
        if event[4] != self.token[r]:
            return
        e = self.target[r]
        if self.faults and not (self.link_up or self.on_ue[e]):
            # the Complete is lost on the radio: to the PU the PE has gone quiet since the cut
            session = self.accepted_session.get(r)
            if session is not None and session[1] == self.token[r]:
                self.resume_from[r] = self.cookie_seen_by(r, e, self.cut_at)
                self.timeout_at(r, max(now, self.detect_at(r, e, self.cut_at)))
            return
        self.completed_at[r] = now
        self.start_next(self.request_pu[r], now)

    def on_load_report(self, event: tuple) -> None:
        """An element's load reaches the PUs' registrar (after the load-update delay)."""
        e = event[3]
        # a remote PE's update cannot reach a cut-off UE
        if self.in_pool[e] and (self.link_up or self.on_ue[e]):
            self.pool.update_policy(self.policy_elements[e], self.load_infos[e][event[4]])

    def on_reject(self, event: tuple) -> None:
        """The element said no: wait the retry delay, then select again without it."""
        now, r = event[0], event[3]
        if event[4] != self.token[r]:
            return
        e = self.target[r]
        faults = self.faults
        if faults and not (self.link_up or self.on_ue[e]):
            # lost on the radio: silence since the request
            self.timeout_at(r, now - 2 * self.one_way[e] + self.silence)
            return
        rejected = self.rejected_by.get(r)
        if rejected is None:
            rejected = self.rejected_by[r] = []
        rejected.append(e)
        # calcapp_pu: wait RETRY_DELAY, then select without the element that said no; a Cookie
        # Echo's reject keeps the session (and its cookie): failover(report=False)
        self.retry_later(r, now, e, faults and r in self.accepted_session)

    def on_retry(self, event: tuple) -> None:
        """The retry delay is over: select again (event: …, excluded element, in a fail-over)."""
        r = event[3]
        if event[4] != self.token[r]:
            return
        if self.faults:
            self.retrying.discard(r)
        self.open(r, event[0], event[5], event[6])

    def on_accept(self, event: tuple) -> None:
        """The Accept reaches the PU (runs with faults; without, the accept time is set at the element)."""
        now, r = event[0], event[3]
        token = self.token[r]
        if event[4] != token:
            return
        e = self.target[r]
        if not (self.link_up or self.on_ue[e]):
            # lost on the radio: silence since the request
            self.timeout_at(r, now - 2 * self.one_way[e] + self.silence)
            return
        if self.accepted_at[r] is None:
            self.accepted_at[r] = now
        accepts = self.accepts.get(r)
        if accepts is None:
            accepts = self.accepts[r] = []
        accepts.append((now, e))
        self.accepted_session[r] = (now, token)
        if not self.element_up[e]:  # sent just before the PE crashed: nothing follows it
            self.timeout_at(r, now + self.silence)

    def on_keepalive_timeout(self, event: tuple) -> None:
        """The PU's keep-alive went unanswered: its session is dead."""
        r = event[3]
        if event[4] != self.token[r]:
            return
        self.session_broke(r, event[0])

    def on_connect_failed(self, event: tuple) -> None:
        """A connect timed out: report the element and try the next one."""
        r = event[3]
        if event[4] != self.token[r]:
            return
        tried, attempts, failover, e = self.pending_connect.pop(r)
        self.report_unreachable(e)
        self.open_session(r, event[0], tried, attempts, failover)

    def on_fault(self, event: tuple) -> None:
        """A fault step (``fault_at``): its handler and element."""
        handler, element = self.fault_steps[event[3]]
        handler(event[0], element)

    # ------------------------------------------------------------------ fault steps

    def fault_at(self, t: float, step: str, element: int = -1) -> None:
        """Schedule fault ``step`` (``emulab.sim.faults``) at ``t``."""
        self.fault_steps.append((self.fault_handlers[step], element))
        heappush(self.heap, (t, next(self.sequence), FAULT, len(self.fault_steps) - 1, 0))

    def fault_crash(self, now: float, e: int) -> None:
        """Element ``e`` crashes: its jobs are lost to their PUs."""
        self.detach(e, now, orphan=False)
        self.element_up[e] = False

    def fault_unregister(self, now: float, e: int) -> None:
        """The registrar's endpoint keep-alive to a crashed element fails: it leaves the pool."""
        if self.in_pool[e] and not self.element_up[e]:
            self.pool.remove(self.policy_elements[e].identifier)
            self.in_pool[e] = False

    def fault_recover(self, now: float, e: int) -> None:
        """Element ``e`` is back, idle, and registers again."""
        self.element_up[e] = True
        self.element_bad_reports[e] = 0
        self.element_advanced_at[e] = now
        if not self.in_pool[e]:
            self.policy_elements[e].policy = self.load_infos[e][0]
            self.pool.add(self.policy_elements[e])
            self.in_pool[e] = True
        else:
            self.pool.update_policy(self.policy_elements[e], self.load_infos[e][0])

    def fault_coverage_cut(self, now: float, _element: int) -> None:
        """The UE loses coverage: packets to and from remote elements are lost from now."""
        self.link_up = False
        self.cut_at = now
        for x in range(self.element_count):
            if not self.on_ue[x] and self.element_up[x]:
                self.detach(x, now, orphan=True)

    def fault_radio_link_failure(self, now: float, _element: int) -> None:
        """T310 ran out: the UE's routes to remote elements are withdrawn."""
        self.routes_up = False
        if self.params.watch_routes:
            self.routes_gone(now)

    def fault_coverage_back(self, now: float, _element: int) -> None:
        """Coverage (and the routes) are back: the registrar relearns the remote elements with the
        next ENRP Presence of their registrars plus a round trip."""
        self.link_up = self.routes_up = True
        assert self.resync_rng is not None
        resync = self.resync_rng.uniform(0.0, self.params.resync_max_s)
        for x in range(self.element_count):
            if not self.on_ue[x]:
                self.fault_at(now + resync + self.rtt[x], fault.RELEARN, x)

    def fault_relearn(self, now: float, e: int) -> None:
        """The PUs' registrar hears of remote element ``e`` again, at its current load."""
        if self.link_up and self.element_up[e]:
            info = self.load_infos[e][len(self.element_jobs[e])]
            if not self.in_pool[e]:
                self.policy_elements[e].policy = info
                self.pool.add(self.policy_elements[e])
                self.in_pool[e] = True
                self.element_bad_reports[e] = 0
            else:
                self.pool.update_policy(self.policy_elements[e], info)

    def fault_partition(self, now: float, _element: int) -> None:
        """Still cut off: the registrar takes over its silent ENRP peers and drops their elements."""
        if not self.link_up:
            for x in range(self.element_count):
                if not self.on_ue[x] and self.in_pool[x]:
                    self.pool.remove(self.policy_elements[x].identifier)
                    self.in_pool[x] = False

    # ------------------------------------------------------------------ elements

    def reschedule(self, e: int, now: float) -> None:
        """Element e's job set changed: its next completion (older ones are now stale)."""
        version = self.element_version[e] + 1
        self.element_version[e] = version
        remaining = self.element_remaining[e]
        if remaining:
            least = min(remaining)
            t = now + (least if least > 0.0 else 0.0) * len(remaining) / self.capacity[e]
            heappush(self.heap, (t, next(self.sequence), ELEMENT_DONE, e, version))

    def report_load(self, e: int, now: float) -> None:
        """Element e reports its load (jobs / max jobs) to the registrar."""
        jobs = len(self.element_jobs[e])
        delay = self.load_update_delay[e]
        if delay <= 0.0:
            if self.in_pool[e]:
                self.pool.update_policy(self.policy_elements[e], self.load_infos[e][jobs])
        else:
            heappush(self.heap, (now + delay, next(self.sequence), LOAD_REPORT, e, jobs))

    def report_unreachable(self, e: int) -> None:
        """ASAP Endpoint Unreachable to the PU's registrar; enough of them remove the element."""
        self.element_bad_reports[e] += 1
        if self.element_bad_reports[e] >= self.params.max_bad_reports and self.in_pool[e]:
            self.pool.remove(self.policy_elements[e].identifier)
            self.in_pool[e] = False

    def detach(self, e: int, now: float, orphan: bool) -> None:
        """Element e's jobs are lost to their PUs (crash or cut off); their keep-alives will tell.

        ``orphan``: the PE itself still runs (cut off), and works on until its keep-alive drops them.
        """
        self.advance(e, now)
        jobs = self.element_jobs[e]
        rtt = self.rtt[e]
        if orphan and jobs:
            # the PE's keep-alives go every interval + RTT from interval after the accept; the first
            # whose ack cannot come back before the cut drops the job a timeout later
            interval = self.params.keepalive_interval_s
            period = interval + rtt
            drops = []
            for r in jobs:
                first = self.job_accepted_at[r] + interval
                k = max(0, math.ceil((now - rtt - first) / period))
                drops.append(first + k * period + self.params.keepalive_timeout_s)
            self.orphans.append((e, now, list(self.element_remaining[e]), drops))
        for r in jobs:
            self.resume_from[r] = self.cookie_seen_by(r, e, now)
            session = self.accepted_session.get(r)
            if session is not None and session[1] == self.token[r]:
                self.timeout_at(r, self.detect_at(r, e, now))
            # else its Accept is still on the way: on_accept sees what became of it
        self.element_jobs[e] = []
        self.element_remaining[e] = []
        self.element_version[e] += 1

    # ------------------------------------------------------------------ the PUs' sessions

    def start_next(self, i: int, now: float) -> None:
        """PU i starts its next queued request, or goes idle."""
        queue = self.pu_queue[i]
        if queue:
            r = queue.popleft()
            self.pu_current[i] = r
            self.started_at[r] = now
            self.open(r, now, -1, False)
        else:
            self.pu_current[i] = -1

    def pick(self, tried: tuple[int, ...] | set[int]) -> int:
        """``PoolSession.open``'s choice: the first element of a handle resolution not in ``tried``;
        if all are, one resolution asking for ``len(tried) + MORE_ITEMS`` (-1: none)."""
        items = self.handle_resolution_items
        for count_ in (items, len(tried) + MORE_ITEMS) if tried else (items,):
            for pe in self.pool.select(count_):
                e = pe.identifier - 1
                if e not in tried:
                    return e
        return -1

    def send(self, r: int, e: int, t: float) -> None:
        """The request (or the Cookie Echo) leaves for element e at ``t`` over a new association."""
        token = self.token[r] + 1
        self.token[r] = token
        self.target[r] = e
        heappush(self.heap, (t + self.send_latency[e], next(self.sequence), AT_ELEMENT, r, token))

    def retry_later(self, r: int, t: float, excluded: int, failover: bool) -> None:
        """Select again after the PU's retry delay, without ``excluded`` (-1: none)."""
        token = self.token[r] + 1
        self.token[r] = token
        t += self.params.reject_retry_s
        heappush(self.heap, (t, next(self.sequence), RETRY, r, token, excluded, failover))
        if self.faults:
            self.retrying.add(r)

    def timeout_at(self, r: int, t: float) -> None:
        """The PU gives the session of request r up at ``t`` (unless something else happens first)."""
        heappush(self.heap, (t, next(self.sequence), KEEPALIVE_TIMEOUT, r, self.token[r]))

    def open(self, r: int, now: float, excluded: int, failover: bool) -> None:
        """Open a session for request r, without ``excluded`` (-1: none); ``failover``: in a fail-over."""
        if self.faults:
            self.open_session(r, now, {excluded} if excluded >= 0 else set(), 0, failover)
        else:
            e = self.pick((excluded,) if excluded >= 0 else ())
            t = now + self.handle_resolution_rtt
            if e < 0:
                self.retry_later(r, t, -1, False)
            else:
                self.send(r, e, t)

    def open_session(self, r: int, now: float, tried: set[int], attempts: int, failover: bool) -> None:
        """``PoolSession.open`` (``failover`` when in one): resolve, connect, report the unreachable.

        Faults only; without faults every connect succeeds and ``open`` does the same in one step.
        """
        while True:
            e = self.pick(tried) if attempts < self.params.open_attempts else -1
            attempts += 1
            t = now + self.handle_resolution_rtt
            if e < 0:
                if failover:
                    # calcapp_pu: a fail-over that finds no PE ends the session ("lost"); a new one,
                    # without the cookie, starts at once
                    self.new_session(r)
                    tried, attempts, failover, now = set(), 0, False, t
                    continue
                self.retry_later(r, t, -1, False)
                return
            tried.add(e)
            if self.element_up[e] and (self.link_up or self.on_ue[e]):
                self.send(r, e, t)
                return
            if not (self.routes_up or self.on_ue[e]):
                # no route since the radio link failure: connect() fails at once
                self.report_unreachable(e)
                now = t
                continue
            # nothing answers (a crashed host, or the radio drops every packet): the connect times out
            token = self.token[r] + 1
            self.token[r] = token
            self.pending_connect[r] = (tried, attempts, failover, e)
            t += self.params.connect_timeout_s
            heappush(self.heap, (t, next(self.sequence), CONNECT_FAILED, r, token))
            return

    def new_session(self, r: int) -> None:
        """The PU gives the session up: no Accept, no cookie any more."""
        self.accepted_session.pop(r, None)
        self.resume_from.pop(r, None)

    def detect_at(self, r: int, e: int, t_dead: float) -> float:
        """When the PU, Accepted, gives up on a PE silent since ``t_dead``: messages (keep-alives
        and acks) arrive every interval + RTT from the Accept on; the last one before ``t_dead``
        is followed by a quiet interval, a keep-alive and its timeout."""
        accepted = self.accepted_session[r][0]
        period = self.params.keepalive_interval_s + self.rtt[e]
        k = math.floor((t_dead - accepted) / period) if t_dead > accepted else 0
        return accepted + k * period + self.silence

    def session_broke(self, r: int, now: float) -> None:
        """The PU finds its session dead (keep-alive timeout, or its route gone): ``_run_job``."""
        e = self.target[r]
        if r in self.accepted_session:
            if self.failovers.get(r, 0) >= self.params.max_failovers:
                self.new_session(r)
                self.open_session(r, now, set(), 0, False)
            else:
                # fail-over: report the PE, select without it, Cookie Echo (resume) if any
                self.failovers[r] = self.failovers.get(r, 0) + 1
                self.report_unreachable(e)
                self.open_session(r, now, {e}, 0, True)
        else:
            # no Accept on this session: calcapp_pu starts a new one at once, reporting nothing
            self.new_session(r)
            self.open_session(r, now, set(), 0, False)

    def routes_gone(self, now: float) -> None:
        """``PoolUser._watch_routes`` / ``connect_routed`` at the RLF: every PU's session or connect
        under way to an element beyond the radio ends now (a PU sleeping has none)."""
        on_ue = self.on_ue
        for i in range(self.pu_count):
            r = self.pu_current[i]
            if r < 0 or r in self.retrying:
                continue
            pending = self.pending_connect.get(r)
            if pending is not None:  # a connect under way: ENETUNREACH, report, the next one
                if not on_ue[pending[3]]:
                    del self.pending_connect[r]
                    self.token[r] += 1
                    self.report_unreachable(pending[3])
                    self.open_session(r, now, pending[0], pending[1], pending[2])
            elif self.target[r] >= 0 and not on_ue[self.target[r]]:
                self.token[r] += 1  # what was still to come from that element is void
                self.session_broke(r, now)


def simulate_run(model: PoolModel, params: RunParams) -> RunResult:
    """Simulate one run of ``params.setting`` PUs for ``params.duration`` seconds (plus the drain)."""
    return Simulation(model, params).run()
