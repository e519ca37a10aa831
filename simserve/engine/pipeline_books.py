"""Bookings of a coalesced pipelined decode run (engine/pipeline_run): each launch restated from
`PipelineLoop._launch` with the same float sums in the same order, and the run's stages' busy
time, charges and send bytes booked in bulk, later (`settle`, before results are read: busy time
is an exact sum, charges and bytes whole-number counts, so when and in which groups they are booked
changes no result; fewer, larger bookings cost less than one per run)."""
from __future__ import annotations

import numpy as np

UNBOOKED_MAX = 512      # lanes' runs whose bulk bookings wait for one `settle`


class Books:
    """PipelineLoop._launch of a coalesced run's decode rounds, bit for bit: the same recurrence
    over the stage free times and the same float sums in the same order (host, waiting for output,
    send seconds), with each lane's stage times, send times and host seconds looked up. Where no
    timeline is recorded, the stages' busy time and charges are booked in bulk after the run, as are
    the sends' bytes with or without one (`close`, `settle`): busy time is summed exactly
    (Stage.busy_s), charges and bytes are whole-number counts."""

    def __init__(self, rep):
        self.rep, self.host, self.stages = rep, rep.host, rep.stages
        self.runtime = rep.host.runtime
        self.timeline = rep.timeline if rep.timeline.enabled else None

    def launch(self, lp, t: float) -> None:
        rep, host, tl = self.rep, self.host, self.timeline
        j, durs, sends = lp.off + lp.launched, lp.durs, lp.sends
        exposed = 0.0
        if self.runtime is not None:
            exposed = host.exposed_of(lp.host, t)
            if exposed > 0:
                host.book(0, t, exposed)
        ready = t + exposed
        free, wait, p2p = rep._stage_free_at, rep.wait_output_s, rep.p2p_s
        f = free[0]                      # the first stage (its GPU step is the host's)
        start = ready if ready > f else f
        d = durs[0][j]
        end = free[0] = start + d
        host.gpu_step(end, d)
        x = sends[0]
        p2p[0] += x
        if tl is not None:
            self._rows(lp, 0, start, end, d)
        ready = end + x
        for s in range(1, len(durs)):
            f = free[s]
            start = ready if ready > f else f
            wait[s - 1] += start - ready
            d = durs[s][j]
            end = free[s] = start + d
            x = sends[s]
            p2p[s] += x
            if tl is not None:
                self._rows(lp, s, start, end, d)
            ready = end + x
        rep.iterations += 1
        lp.original_back = False
        lp.times.append(end)
        lp.back = ready
        lp.launched += 1

    def _rows(self, lp, s: int, start: float, end: float, d: float) -> None:
        """Timeline rows of stage s's iteration and send in a launch (their booking with them)."""
        rep, n = self.rep, lp.n
        self.timeline.iteration(rep, s, start, end, 1, 0, n, self.stages[s].account((n, n), d))
        self.timeline.transfer(rep, s, end, end + lp.sends[s], lp.nbytes[s] * len(rep._routes[s]))

    def close(self, lanes: list) -> None:
        """The run's bulk bookings (see the class docstring), left with the replica until
        UNBOOKED_MAX lanes' runs wait or the results are read (`settle`): per sequence count,
        its stages' times as views of the remembered arrays and its launches' count."""
        rep = self.rep
        unbooked = rep._unbooked
        for lp in lanes:
            if lp.launched:
                entry = unbooked.get(lp.n)
                if entry is None:
                    entry = unbooked[lp.n] = [lp.nbytes, 0, [[] for _ in self.stages]]
                entry[1] += lp.launched
                if self.timeline is None:
                    lo, hi = lp.off, lp.off + lp.launched
                    for views, times in zip(entry[2], lp.arrays):
                        views.append(times[lo:hi])
                rep._unbooked_runs += 1
        if rep._unbooked_runs >= UNBOOKED_MAX:
            settle(rep)


def settle(rep) -> None:
    """Book what coalesced runs left unbooked: each stage's busy time and charges, one booking per
    sequence count (busy time is an exact sum; charges and bytes are whole-number counts, so the
    grouping changes no result), and the sends' bytes."""
    for n, (nbytes, count, views) in rep._unbooked.items():
        for s, stage in enumerate(rep.stages):
            if views[s]:
                stage.account((n, n), views[s][0] if len(views[s]) == 1 else np.concatenate(views[s]))
            rep._account_send(s, nbytes[s], count)
    rep._unbooked.clear()
    rep._unbooked_runs = 0
