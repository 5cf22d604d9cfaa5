"""How the soak judges what it saw: only the kill-free tail's memory counts and a drift past
5 % fails it; a request cut off without a response is sent again, as the CLI does."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import httpx

from benchmarks.soak import REWARM_S, Call, Kill, SoakReport, Tally, _send, pss_stats
from tests.httpserver import LocalHttpServer, send_bytes

MINUTES_30 = 1800.0


def samples(total_at: Callable[[float], float]) -> list[tuple[float, int, dict[str, int]]]:
    """One sample every 2 s; `total_at(t)` gives the runner's PSS, the API worker stays 1 GB."""
    out = []
    for i in range(int(MINUTES_30 / 2)):
        t = 2.0 * i
        runner = int(total_at(t))
        out.append(
            (t, runner + 1_000_000_000, {"Brisque [1]": runner, "festora-vision [2]": 10**9})
        )
    return out


def report(drift: float | None) -> SoakReport:
    return SoakReport(
        minutes=30, clients=8, requests=1, answers={}, wrong={}, cut_off={},
        answered_on_retry=0, lost={}, server_errors_5xx=0, unexpected_5xx=0, kills=[],
        latency_ms_p50=0, latency_ms_p95=0, pss={}, pss_drift_pct=drift,
        load_average_1min={},
    )  # fmt: skip


def test_a_restart_that_regrows_before_the_tail_does_not_count() -> None:
    kill = Kill("Brisque", at_s=300.0, old_pid=1, new_pid=3, saw_down=True, recovered_s=60.0)

    def runner(t: float) -> float:  # small after the restart, grown back 100 s later
        return 2e9 if not 300 <= t < 460 else 0.5e9

    stats, drift = pss_stats(samples(runner), MINUTES_30, [kill])
    assert stats["tail_from_s"] == 360.0 + REWARM_S
    assert drift == 0.0
    assert stats["by_process_first_last_quarter_mb"]["Brisque [1]"] == [2000.0, 2000.0]
    assert report(drift).failures() == []


def test_growth_in_the_tail_breaks_the_promise() -> None:
    stats, drift = pss_stats(samples(lambda t: 2e9 + 1e6 * t / 2), MINUTES_30, [])
    assert stats["tail_from_s"] == MINUTES_30 * 0.2
    assert drift is not None and drift > 5
    assert any("PSS drifted" in problem for problem in report(drift).failures())


def test_a_tail_too_short_is_reported_but_not_judged() -> None:
    kill = Kill("Brisque", at_s=1500.0, old_pid=1, new_pid=3, saw_down=True, recovered_s=60.0)
    stats, drift = pss_stats(samples(lambda t: 2e9 + 1e7 * t), MINUTES_30, [kill])
    assert stats["tail_s"] < 300 and drift is None


def test_a_request_cut_off_without_a_response_is_sent_again_and_not_lost() -> None:
    answers = iter([None, b'{"ok": true}'])

    def once_cut_off(handler: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        body = next(answers)
        if body is None:  # what a killed API worker's callers see: the connection just closes
            handler.close_connection = True
            return
        send_bytes(body, content_type="application/json")(handler, stopping)

    tally = Tally()
    with LocalHttpServer() as server, httpx.Client(base_url=server.base_url) as client:
        server.route("/v1/analyze", once_cut_off)
        call = Call("analyze", "good", lambda c: c.get("/v1/analyze"), "200")
        response = _send(call, client, tally)
    assert response is not None and response.json() == {"ok": True}
    assert tally.cut_off == {"RemoteProtocolError": 1}
    assert tally.answered_on_retry == 1 and not tally.lost
