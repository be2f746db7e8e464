"""Takeover of a dead registrar's PEs (RSPLIB 3.4.4 ``rspregistrar-takeover.c``): both halves.

* **Agreement among the survivors** (``TakeoverAgreement``, the ENRP half, one per ``EnrpNode``).
  For a dead peer that still owns entries: Init Takeover to all live peers; each answers Init
  Takeover Ack, unless it is running its own takeover of the same target and has the lower ID (the
  lower ID wins; the target itself answers with Presences to stop it). With every ack in, or when
  ``takeover_expiry`` (5 s) runs out (peers that do not answer are presumed gone too), the
  initiator sends Takeover Server and becomes the entries' home registrar. A registrar that acked
  but sees no Takeover Server within takeover expiry + no-response time starts its own takeover.
* **The new home registrar** (``HomeTakeover``, the registrar half, one per ``Registrar``): it
  sends each taken-over PE an Endpoint Keep-Alive with the Home flag over a new connection (to the
  PE's ASAP endpoint, where RSPLIB's PEs listen, else to its user transport, where ours answer:
  ``HomeTakeover.targets``) and monitors it; no ack within the keep-alive timeout removes the PE
  (and a Handle Update DEL_PE tells the others).

**Partition (coverage loss).** A registrar cut off from its peers declares them dead after
last-heard + no-response (10 s by default) and *takes over* their entries; the Home keep-alives
cannot reach PEs behind the cut, so those entries are removed one keep-alive timeout later (15 s in
all), and never handed out afterwards. PEs it can still reach (e.g. the UE's own PE registered with
it) stay and are chosen. The far side does the same with the cut registrar's PEs. Taking over
rather than dropping keeps PEs that are still reachable (a crashed registrar, or an asymmetric cut).
When the cut heals the Presences resume (static peers are reconnected to; peers known only from a
peer list are learnt again from a static peer's list), each side sees a checksum mismatch for the
other's own PEs and downloads them (``rserpool.enrp_mirror``): both converge to the union of what
each side can monitor.
Known limit: a PE reachable from both sides during the cut may be owned twice until it re-registers.

Fault injection for tests: ``Registrar.blocked_hosts`` (takeover keep-alives to these PE hosts fail).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rserpool import transport as tp
from rserpool.wire import InitTakeover, InitTakeoverAck, SctpTransport, TakeoverServer, TcpTransport

if TYPE_CHECKING:
    from rserpool.enrp import EnrpNode, _Conn
    from rserpool.handlespace import PoolEntry
    from rserpool.registrar import Registrar

log = logging.getLogger(__name__)

# Where a Home Keep-Alive is sent: (host, port, framing), in the order tried.
Target = tuple[str, int, tp.Framing]


# ---------------------------------------------------------------------------------------------
# The ENRP half: agreeing on who takes over


@dataclass
class _Takeover:
    target: int
    acks_needed: set[int]
    timer: asyncio.TimerHandle | None = None


class TakeoverAgreement:
    """The takeover procedure of one ``EnrpNode`` (RFC 5353 section 3.9, RSPLIB's rules)."""

    def __init__(self, node: EnrpNode) -> None:
        self.node = node
        self.running: dict[int, _Takeover] = {}  # target -> our takeover of it
        self._acked: dict[int, asyncio.TimerHandle] = {}  # target -> watchdog after our ack

    def involves(self, target: int) -> bool:
        """Whether a takeover of ``target`` is under way (ours, or one we acked)."""
        return target in self.running or target in self._acked

    def clear(self) -> None:
        """Forget every takeover and cancel its timers (the node ends)."""
        for to in self.running.values():
            if to.timer is not None:
                to.timer.cancel()
        for h in self._acked.values():
            h.cancel()
        self.running.clear()
        self._acked.clear()

    def peer_dead(self, target: int) -> None:
        """``target`` was declared dead: it owes no acks any more; take over its PEs unless under way."""
        for to in self.running.values():
            to.acks_needed.discard(target)
        for t in list(self.running.values()):
            if not t.acks_needed:
                self._finish(t.target)
        if self.involves(target):
            return
        self._start(target)

    def cancel(self, target: int) -> None:
        """``target`` is alive after all: stop taking it over."""
        to = self.running.pop(target, None)
        if to is not None and to.timer is not None:
            to.timer.cancel()
        h = self._acked.pop(target, None)
        if h is not None:
            h.cancel()

    def _start(self, target: int) -> None:
        node = self.node
        if not any(True for _ in node.reg.handlespace.owned_by(target)):
            return
        loop = asyncio.get_running_loop()
        # Acks are awaited from the peers that have shown themselves alive; one only named in a
        # peer list may not exist any more.
        to = _Takeover(target, {p.identifier for p in node.live_peers() if p.heard})
        self.running[target] = to
        log.info("registrar $%08x: initiating takeover of $%08x (%d acks needed)", node.id, target,
                 len(to.acks_needed))
        for p in node.live_peers():
            node.send(p, InitTakeover(sender_id=node.id, receiver_id=p.identifier, target_id=target).encode())
        if not to.acks_needed:
            self._finish(target)
        else:
            to.timer = loop.call_later(node.cfg.takeover_expiry, self._finish, target)

    def on_init_takeover(self, c: _Conn, msg: InitTakeover) -> None:
        node = self.node
        target = msg.target_id
        if target == node.id:
            # We are alive: answer with Presences so that the initiator hears us (RSPLIB).
            for p in node.live_peers():
                node.send_presence(p)
            node.reply_presence(c, msg.sender_id)
            return
        mine = self.running.get(target)
        if mine is not None:
            if msg.sender_id < node.id:  # lower ID wins
                if mine.timer is not None:
                    mine.timer.cancel()
                del self.running[target]
            else:
                return  # we continue ours; the other side will yield
        node.reply(c, InitTakeoverAck(sender_id=node.id, receiver_id=msg.sender_id, target_id=target).encode())
        old = self._acked.pop(target, None)
        if old is not None:
            old.cancel()
        # If the winner dies before Takeover Server, take over ourselves.
        loop = asyncio.get_running_loop()
        self._acked[target] = loop.call_later(node.cfg.takeover_expiry + node.cfg.peer_max_time_no_response,
                                              self._ack_watchdog, target)

    def _ack_watchdog(self, target: int) -> None:
        self._acked.pop(target, None)
        if target not in self.node.peers and target not in self.running:
            self._start(target)

    def on_takeover_ack(self, msg: InitTakeoverAck) -> None:
        to = self.running.get(msg.target_id)
        if to is None:
            return
        to.acks_needed.discard(msg.sender_id)
        if not to.acks_needed:
            self._finish(msg.target_id)

    def _finish(self, target: int) -> None:
        node = self.node
        to = self.running.pop(target, None)
        if to is None:
            return
        if to.timer is not None:
            to.timer.cancel()
        if target in node.peers:
            return  # it came back meanwhile
        for p in node.live_peers():
            node.send(p, TakeoverServer(sender_id=node.id, receiver_id=p.identifier, target_id=target).encode())
        entries = list(node.reg.handlespace.owned_by(target))
        log.warning("registrar $%08x: taking over %d PEs of $%08x", node.id, len(entries), target)
        node.reg.stats["takeover"] += 1
        node.reg.takeover.take_over(entries)

    def on_takeover_server(self, msg: TakeoverServer) -> None:
        """Another registrar took ``target``'s PEs over: they are its now (a peer still alive for us
        resyncs by checksum)."""
        reg = self.node.reg
        target = msg.target_id
        h = self._acked.pop(target, None)
        if h is not None:
            h.cancel()
        mine = self.running.pop(target, None)
        if mine is not None and mine.timer is not None:
            mine.timer.cancel()
        for e in list(reg.handlespace.owned_by(target)):
            reg.handlespace.set_owner(e.pool_handle, e.identifier, msg.sender_id)
            reg.refresh_mirrored(e)


# ---------------------------------------------------------------------------------------------
# The registrar half: becoming the PEs' home


class HomeTakeover:
    """Makes a ``Registrar`` the home registrar of PEs taken over from a dead peer."""

    def __init__(self, registrar: Registrar) -> None:
        self.reg = registrar

    def targets(self, e: PoolEntry) -> tuple[Target, ...]:
        """Where to send a taken-over PE its Home Keep-Alive, in the order tried.

        First the PE's ASAP endpoint (the registrator transport its home registrar recorded):
        RSPLIB's PEs (``asapinstance.c``) listen there on their registrar hunt socket, take an
        association on which a Keep-Alive with the Home flag arrives as their new registrar
        connection and ack there; RSPLIB's registrar sends its takeover Keep-Alives there too.
        Then the PE's user transport, where this package's PEs answer (their ASAP endpoint is the
        ephemeral port of their registrar connection, where nobody listens: that attempt fails at
        once)."""
        out: list[Target] = []
        reg = e.registrator_transport
        if isinstance(reg, SctpTransport if self.reg.kind == "sctp" else TcpTransport) and reg.port \
                and reg.addresses and not tp.is_unspecified(reg.addresses[0]):
            out.append((reg.addresses[0], reg.port, tp.Framing.ASAP))
        user = e.user_transport
        addrs = getattr(user, "addresses", ())
        if addrs:
            out.append((addrs[0], user.port, tp.Framing.TAGGED))  # type: ignore[union-attr]
        return tuple(out)

    def take_over(self, entries: list[PoolEntry]) -> None:
        """Become home registrar of ``entries``: Keep-Alive with the Home flag, then monitor them."""
        reg = self.reg
        groups: dict[tuple[Target, ...], list[tuple[bytes, int]]] = {}
        for e in entries:
            if reg.handlespace.get(e.pool_handle, e.identifier) is not e:
                continue
            reg.handlespace.set_owner(e.pool_handle, e.identifier, reg.identifier)
            reg.owner_changed(e)
            targets = self.targets(e)
            if not targets:
                continue
            groups.setdefault(targets, []).append((e.pool_handle, e.identifier))
        for targets, keys in groups.items():
            reg.spawn(self._contact(targets, keys))

    async def _contact(self, targets: tuple[Target, ...], keys: list[tuple[bytes, int]]) -> None:
        reg = self.reg
        peer = reg.outbound_peer(targets[0][0])
        for key in keys:
            entry = reg.handlespace.get(*key)
            if entry is None or entry.home_pr != reg.identifier:
                continue
            # no ack within the keep-alive timeout (unreachable PE) removes it
            reg.monitor_via(entry, peer)
        for host, port, framing in targets:
            if not peer.entries:
                return  # timed out meanwhile (the keep-alive timeout removed them)
            if host in reg.blocked_hosts:
                continue
            try:
                await tp.connect(peer, host, port, framing, kind=reg.kind, timeout=reg.config.keepalive_timeout)
                break
            except (TimeoutError, OSError) as exc:
                log.info("takeover: cannot reach PE at %s: %s", tp.format_endpoint(host, port), exc)
        else:
            return
        if not peer.entries and peer.conn is not None:  # timed out while connecting
            peer.conn.close()
            return
        for key in list(peer.entries):
            entry = reg.handlespace.get(*key)
            if entry is not None and entry.registrator is peer:
                reg.send_keepalive(entry, home=True)
