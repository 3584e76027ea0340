"""The load generator's client over TLS (the sim's ``--tls``): a stream read to its end, twice on one connection,
then closed."""

import ssl

from loadtest.accounting import StreamAccounting
from loadtest.client import Endpoint, now_ns, open_connection
from loadtest.record import SessionRecord
from loadtest.session import build_request
from tests.conftest import start_sim


async def test_two_streams_on_one_tls_connection_then_closed(nursery, tmp_path):
    sim = await start_sim(nursery, tls_dir=str(tmp_path), chunks=3)
    assert sim.url.startswith("https://")
    ep = Endpoint.from_url(sim.url)
    spec = build_request(ep, model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=None, stream=True)
    conn = await open_connection(ep, ssl_context=ssl.create_default_context(cafile=str(tmp_path / "ca.pem")))
    try:
        for _ in range(2):
            assert conn.closed_by_peer() is False
            await conn.send_request(spec.request, spec.data)
            assert (await conn.receive_response()).status_code == 200
            rec = SessionRecord()
            acct = StreamAccounting(rec)
            ended = False
            while not ended:
                data, ended = await conn.receive_body()
                acct.feed(data, now_ns())
            assert acct.verdict() == (None, None) and rec.chunks == rec.expected_chunks >= 3
            assert conn.reusable
            conn.next_cycle()
    finally:
        conn.close()
    assert conn.socket is not None and conn.socket.fileno() == -1
