"""Host-to-device copies that overlap compute: the CUDA backend's ``stage_to_device`` /
``wait_staged`` (issue 19).

A ``Stager`` copies each host batch into a pinned (page-locked) host buffer and
uploads it with an asynchronous copy on its own non-blocking stream, then
records an event. The training loop stages batch k+1 before it enqueues step
k, so the upload runs while step k computes; ``wait(ticket)`` makes the
compute stream wait for that event on the device (no host synchronisation).

Pinned buffers come in ``slots`` sets used in turn; a set is refilled only
after the host has waited for the event of its previous upload, so a copy
never reads a buffer that is being overwritten. Before each upload the copy
stream waits for the work already enqueued on the compute stream: the device
memory it writes may have been freed by that work (CuPy's pool recycles a
block as soon as Python drops the array), so the write must come after it.

With ``cuda=None`` (NumPy arrays, the CPU emulation and tests) the same ring
logic runs with host stand-ins for streams and events, which record what
they were asked to do.
"""
from __future__ import annotations

import numpy as np


class _HostEvent:
    """A stand-in for ``cupy.cuda.Event`` off the GPU: always complete; counts host waits."""

    def __init__(self, log):
        self.log = log

    def synchronize(self):
        self.log.append("host-wait")


class Ticket:
    """The event of one staged batch (None when nothing was uploaded)."""

    __slots__ = ("event",)

    def __init__(self, event):
        self.event = event


class Stager:
    def __init__(self, xp, settle, cuda=None, slots=3):
        """xp: cupy (or numpy); settle(host_array) -> the host array in the dtype the device
        gets (float64 -> float32); cuda: ``cupy.cuda`` or None (host stand-ins)."""
        self.xp = xp
        self.settle = settle
        self.cuda = cuda
        self.stream = cuda.Stream(non_blocking=True) if cuda is not None else None
        self._buffers = [dict() for _ in range(slots)]  # per slot: (position, nbytes) -> uint8 buffer
        self._events = [None] * slots
        self._next = 0
        self.log = []  # host stand-in: what was waited for (tests read it)

    def _pinned(self, slot, key, nbytes):
        buf = self._buffers[slot].get(key)
        if buf is None:
            if self.cuda is not None:
                mem = self.cuda.alloc_pinned_memory(max(nbytes, 1))
                buf = np.frombuffer(mem, np.uint8, nbytes)
            else:
                buf = np.empty(nbytes, np.uint8)
            self._buffers[slot][key] = buf
        return buf

    def stage(self, arrays):
        """Start uploading ``arrays`` (host NumPy arrays; text arrays stay on the host).
        Returns (list of device arrays or the untouched host text arrays, Ticket)."""
        slot = self._next
        self._next = (slot + 1) % len(self._buffers)
        previous = self._events[slot]
        if previous is not None:
            previous.synchronize()  # that slot's last upload has finished reading its buffers
        out = []
        if self.cuda is not None:
            compute = self.cuda.get_current_stream()
            self.stream.wait_event(compute.record())
        uploaded = False
        for i, a in enumerate(arrays):
            host = np.asarray(a)
            if host.dtype.kind not in "biuf":
                out.append(host)
                continue
            host = np.ascontiguousarray(self.settle(host))
            buf = self._pinned(slot, (i, host.nbytes), host.nbytes)
            view = buf.view(host.dtype).reshape(host.shape)
            np.copyto(view, host)
            dev = self.xp.empty(host.shape, host.dtype)
            if self.cuda is not None:
                dev.set(view, stream=self.stream)
            else:
                dev[...] = view
            out.append(dev)
            uploaded = True
        if not uploaded:
            self._events[slot] = None
            return out, Ticket(None)
        event = self.stream.record() if self.cuda is not None else _HostEvent(self.log)
        self._events[slot] = event
        return out, Ticket(event)

    def wait(self, ticket):
        """Order the compute stream after the upload of ``ticket`` (on the device)."""
        if ticket is None or ticket.event is None:
            return
        if self.cuda is not None:
            self.cuda.get_current_stream().wait_event(ticket.event)
        else:
            self.log.append("stream-wait")
