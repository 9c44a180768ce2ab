"""A small HTTP/1.1 load client, run as its own process by benchmarks/serving.py.

    python -m benchmarks.serving_peers.load --port 8080 --path /v1/models/m:predict \
        --bodies bodies.jsonl --connections 8 --seconds 5 --output result.json

It keeps a fixed number of keep-alive connections to 127.0.0.1, each sending one request after
another (a closed loop, as wrk does), cycling through the request bodies (one JSON document per
line), until it has sent --requests or --seconds have passed, whichever comes first: every run
ends by itself. It records the latency of every request (from writing it to reading the whole
response) and counts as an error every response that is not HTTP 200 or lacks --expect, every
timeout and every broken connection.

Standard library only (uvloop if it is installed), and no HTTP library on the hot path: a
heavier client would take CPU from the server it measures when both share two cores.
"""

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
ERROR_SAMPLES = 5


class Tally:
    """What one phase of the run saw: latencies of good responses, errors and a few samples."""

    def __init__(self, requests: int | None, seconds: float | None):
        self.left = requests
        self.started = time.perf_counter()
        self.deadline = None if seconds is None else self.started + seconds
        self.latencies: list[float] = []
        self.finished: list[float] = []  # when each good response came, from the start
        self.errors = 0
        self.errored: list[float] = []  # when each error happened
        self.error_samples: list[str] = []

    def take(self) -> bool:
        """Whether one more request may start."""
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return False
        if self.left is not None:
            if self.left <= 0:
                return False
            self.left -= 1
        return True

    def ok(self, latency: float) -> None:
        self.latencies.append(latency)
        self.finished.append(time.perf_counter() - self.started)

    def error(self, what: str) -> None:
        self.errors += 1
        self.errored.append(time.perf_counter() - self.started)
        if len(self.error_samples) < ERROR_SAMPLES:
            self.error_samples.append(what[:300])


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the server will close the connection) of one HTTP/1.1 response."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split(None, 2)[1])
    length, chunked, close = None, False, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value:
            chunked = True
        elif name == b"connection" and value == b"close":
            close = True
    if chunked:
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return status, bytes(body), close
    if length is None:
        return status, await reader.read(), True
    return status, await reader.readexactly(length), close


class Connection:
    """One keep-alive connection, reopened after an error or a `Connection: close`."""

    def __init__(self, port: int):
        self.port = port
        self.reader = None
        self.writer = None

    async def send(self, request: bytes, timeout: float) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        self.writer.write(request)
        status, body, close = await asyncio.wait_for(read_response(self.reader), timeout)
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _loop(
    connection: Connection,
    requests: list[bytes],
    offset: int,
    tally: Tally,
    expect: bytes,
    timeout: float,
):
    clock = time.perf_counter
    index = offset
    while tally.take():
        request = requests[index % len(requests)]
        index += 1
        started = clock()
        try:
            status, body = await connection.send(request, timeout)
        except TimeoutError:  # before OSError, its base class
            connection.close()
            tally.error(f"no response within {timeout:g} s")
            continue
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as error:
            connection.close()
            tally.error(f"{type(error).__name__}: {error}")
            await asyncio.sleep(0.01)  # a server that is gone: no hot loop of refusals
            continue
        took = clock() - started
        if status != 200 or expect not in body:
            tally.error(f"HTTP {status}: {body[:200]!r}")
        else:
            tally.ok(took)


async def run_phase(connections, requests, tally: Tally, expect: bytes, timeout: float) -> float:
    """Run every connection's loop until the tally says stop; return the seconds it took."""
    started = time.perf_counter()
    step = max(1, len(requests) // max(1, len(connections)))
    await asyncio.gather(
        *(
            _loop(connection, requests, i * step, tally, expect, timeout)
            for i, connection in enumerate(connections)
        )
    )
    return time.perf_counter() - started


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation, as numpy's default."""
    if not sorted_values:
        return float("nan")
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def latency_ms(latencies: list[float]) -> dict:
    values = sorted(latencies)
    ms = {f"p{q}": round(percentile(values, q) * 1000, 4) if values else None for q in (50, 90, 99)}
    ms["max"] = round(values[-1] * 1000, 4) if values else None
    ms["mean"] = round(sum(values) / len(values) * 1000, 4) if values else None
    return ms


def windows(tally: Tally, width: float) -> list[dict]:
    """Requests, errors and latency per window of `width` seconds, by when each one ended."""
    count = int(max([0.0, *tally.finished, *tally.errored]) // width) + 1
    latencies: list[list[float]] = [[] for _ in range(count)]
    errors = [0] * count
    for at, latency in zip(tally.finished, tally.latencies, strict=True):
        latencies[int(at // width)].append(latency)
    for at in tally.errored:
        errors[int(at // width)] += 1
    return [
        {
            "start_s": round(i * width, 1),
            "requests": len(latencies[i]),
            "errors": errors[i],
            "latency_ms": {k: v for k, v in latency_ms(latencies[i]).items() if k != "mean"},
        }
        for i in range(count)
    ]


def summary(tally: Tally, seconds: float, connections: int, window: float | None) -> dict:
    result = {
        "connections": connections,
        "requests": len(tally.latencies),
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "seconds": round(seconds, 3),
        "throughput_rps": round(len(tally.latencies) / seconds, 2) if seconds > 0 else None,
        "latency_ms": latency_ms(tally.latencies),
    }
    if window:
        result["windows"] = windows(tally, window)
    return result


def http_requests(port: int, path: str, bodies: list[bytes]) -> list[bytes]:
    """Each body as a whole POST request, ready to write."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Content-Type: application/json\r\nAccept: application/json\r\n"
    )
    return [
        (head + f"Content-Length: {len(body)}\r\n\r\n").encode("ascii") + body for body in bodies
    ]


async def run(args) -> dict:
    bodies = [line.strip() for line in Path(args.bodies).read_bytes().splitlines() if line.strip()]
    if not bodies:
        raise SystemExit(f"error: {args.bodies}: no request bodies")
    requests = http_requests(args.port, args.path, bodies)
    expect = args.expect.encode("utf-8")
    connections = [Connection(args.port) for _ in range(args.connections)]
    try:
        if args.warmup:
            await run_phase(connections, requests, Tally(args.warmup, None), expect, args.timeout)
        tally = Tally(args.requests, args.seconds)
        seconds = await run_phase(connections, requests, tally, expect, args.timeout)
    finally:
        for connection in connections:
            connection.close()
    return summary(tally, seconds, args.connections, args.window_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="on 127.0.0.1")
    parser.add_argument("--path", required=True, help="e.g. /v1/models/NAME:predict")
    parser.add_argument("--bodies", required=True, help="a file of JSON bodies, one per line")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--requests", type=int, help="stop after this many (timed) requests")
    parser.add_argument("--seconds", type=float, help="stop starting requests after this long")
    parser.add_argument("--warmup", type=int, default=0, help="untimed requests first")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, in seconds")
    parser.add_argument("--expect", default="", help="a good response's body contains this")
    parser.add_argument("--window-seconds", type=float, help="also report per window this wide")
    parser.add_argument("--output", help="write the summary as JSON here (else stdout)")
    args = parser.parse_args(argv)
    if args.requests is None and args.seconds is None:
        parser.error("give --requests or --seconds (or both): every run must end by itself")
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    text = json.dumps(result)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
