"""A light JetStream publisher for scripts/cluster-load.sh (nats-py, asyncio, one process).

  nats_bench.py setup URL,URL,URL            create the R3 file-storage stream BENCH (subject
                                             "bench"), print the URL of its leader's server
  nats_bench.py sync  URL SECONDS INFLIGHT SIZE   INFLIGHT tasks, each publish-and-wait-for-ack
  nats_bench.py async URL SECONDS INFLIGHT SIZE   publish_async with at most INFLIGHT acks pending

Prints one line: RESULT rate=ACKS_PER_S acked=N errors=N seconds=S client_cpu_s=C
"""

import asyncio
import resource
import sys
import time

import nats
from nats.js.api import StorageType, StreamConfig


async def setup(urls):
    names = {}
    for url in urls:
        nc = await nats.connect(url)
        names[nc._server_info.get("server_name")] = url
        await nc.close()
    nc = await nats.connect(urls)
    js = nc.jetstream(timeout=10)
    config = StreamConfig(name="BENCH", subjects=["bench"], num_replicas=3, storage=StorageType.FILE)
    deadline = time.monotonic() + 60
    while True:
        try:
            await js.add_stream(config)
            break
        except Exception as e:  # no JetStream meta leader yet
            if time.monotonic() > deadline:
                raise
            print(f"waiting for JetStream: {e!r}", file=sys.stderr)
            await asyncio.sleep(0.5)
    while True:
        info = await js.stream_info("BENCH")
        leader = info.cluster.leader if info.cluster else None
        if leader and len(info.cluster.replicas or []) == 2:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"stream BENCH has no leader and two replicas: {info.cluster}")
        await asyncio.sleep(0.2)
    await nc.close()
    print(names.get(leader, urls[0]))


async def run(mode, url, seconds, inflight, size):
    payload = b"x" * size
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=10, publish_async_max_pending=inflight)
    acked = 0
    errors = 0
    start = time.monotonic()
    deadline = start + seconds
    if mode == "sync":

        async def worker():
            nonlocal acked, errors
            while time.monotonic() < deadline:
                try:
                    await js.publish("bench", payload)
                    acked += 1
                except Exception:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(inflight)))
    else:

        def done(f):
            nonlocal acked, errors
            if f.cancelled() or f.exception() is not None:
                errors += 1
            else:
                acked += 1

        while time.monotonic() < deadline:
            f = await js.publish_async("bench", payload)
            f.add_done_callback(done)
        await asyncio.wait_for(js.publish_async_completed(), timeout=30)
    elapsed = time.monotonic() - start
    await nc.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"RESULT rate={acked / elapsed:.1f} acked={acked} errors={errors} seconds={elapsed:.2f} "
        f"client_cpu_s={ru.ru_utime + ru.ru_stime:.2f}"
    )


def main():
    mode = sys.argv[1]
    if mode == "setup":
        asyncio.run(setup(sys.argv[2].split(",")))
    elif mode in ("sync", "async"):
        asyncio.run(run(mode, sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
