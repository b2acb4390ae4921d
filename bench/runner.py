"""The benchmark run: start the fake upstream, nginx and ccproxy side by side, drive every scenario at each
in interleaved repetitions, and collect medians."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from bench import client, instructions, micro
from bench import payloads as p
from bench.load import Load, Wrk, median, percentile, python_load
from bench.nginx import nginx_binary, nginx_proc
from bench.procs import (
    HOST,
    OBSERVE_OFF,
    Pinning,
    Proc,
    bench_module,
    ccproxy_command,
    ccproxy_env,
    ccproxy_proc,
    cpu_seconds,
    cpus,
    free_port,
    rss_mb,
    scratch_dir,
    wait_healthy,
    which,
)
from ccproxy.formats.base import Format

TARGETS = ("direct", "nginx", "ccproxy")


@dataclass
class Settings:
    reps: int = 3
    json_seconds: float = 2
    stream_seconds: float = 1.5
    json_conns: tuple[int, ...] = (1, 32, 128)
    stream_conns: tuple[int, ...] = (1, 32, 128)
    routes: tuple[str, ...] = tuple(p.ROUTES)
    large_conns: tuple[int, ...] = (1, 32)
    slow_routes: tuple[str, ...] = ("messages", "chat")
    slow_conns: int = 1000
    slow_events: int = 100
    slow_interval: float = 0.05
    use_nginx: bool = True
    use_wrk: bool = True
    workers: bool = True
    observe: bool = True  # the request scenarios with metrics + ledger + pricing (default on) vs off
    dashboard: bool = True  # messages at 32 conns with the dashboard's live stream open vs closed
    decisions: bool = True
    startup_reps: int = 3
    help_reps: int = 5
    micro: bool = True
    instructions: bool = True  # callgrind instruction counts, when valgrind is installed
    warmup: bool = True
    settle: float = 2.5  # quiet seconds before the idle/after-load memory readings (idle trim: after 1-2 s)
    mode: str = "full"

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            json_seconds=2,
            stream_seconds=1,
            json_conns=(1, 32),
            stream_conns=(1, 32),
            large_conns=(1,),
            slow_routes=("messages",),
            slow_events=21,
            use_nginx=False,
            workers=False,
            observe=False,
            dashboard=False,
            decisions=False,
            startup_reps=2,
            help_reps=3,
            mode="quick",
        )

    @classmethod
    def instructions_only(cls) -> Settings:
        """Only the callgrind counts per answer: steady on a busy machine, for before/after comparisons."""
        settings = cls.smoke()
        settings.routes, settings.use_nginx, settings.instructions = tuple(p.ROUTES), False, True
        settings.mode = "instructions"
        return settings

    @classmethod
    def smoke(cls) -> Settings:
        return cls(
            reps=1,
            json_seconds=0.3,
            stream_seconds=0.2,
            json_conns=(1,),
            stream_conns=(2,),
            routes=("messages", "chat"),
            large_conns=(),
            slow_routes=("messages",),
            slow_conns=20,
            slow_events=6,
            slow_interval=0.02,
            use_nginx=False,
            use_wrk=False,
            workers=False,
            decisions=False,
            startup_reps=0,
            help_reps=1,
            micro=False,
            instructions=False,
            warmup=False,
            settle=0.1,
            mode="smoke",
        )


@dataclass(frozen=True)
class Scenario:
    kind: str  # "json", "stream" or "slow"
    route: p.Route
    conns: int
    large: bool = False

    @property
    def key(self) -> str:
        name = self.route.key + (" large-body" if self.large else "")
        return f"{self.kind}:{name}:{self.conns}"

    @property
    def baseline(self) -> str:
        """Direct and nginx runs are shared by routes onto the same upstream answer."""
        up = "anthropic" if self.route.upstream is Format.ANTHROPIC else "codex"
        return f"{self.kind}:{up}{' large-body' if self.large else ''}:{self.conns}"

    @property
    def marker(self) -> str:
        return {"json": "", "stream": p.LONG, "slow": p.SLOW}[self.kind]

    def deltas(self, settings: Settings) -> int:
        if self.kind == "slow":
            return settings.slow_events - (5 if self.route.upstream is Format.ANTHROPIC else 8)
        return p.STREAM_EVENTS - (5 if self.route.upstream is Format.ANTHROPIC else 8)

    def request(self, target: str, port: int) -> tuple[str, bytes, list[tuple[str, str]], Format]:
        """(path, body, headers, answer format) for this scenario at ``target``."""
        stream = self.kind != "json"
        host = f"{HOST}:{port}"
        if target not in ("direct", "nginx"):  # ccproxy, ccproxy-w2, variant: the client's request
            body = p.client_body(self.route, stream=stream, marker=self.marker, large=self.large)
            return self.route.path, body, p.headers_for(self.route.client, host), self.route.client
        body = p.direct_body(self.route, stream=stream, marker=self.marker, large=self.large)
        upstream = self.route.upstream
        headers = p.headers_for(upstream, host)
        if upstream is Format.ANTHROPIC:
            headers = [(k, v) for k, v in headers if k != "x-api-key"] + [
                ("authorization", "Bearer sk-ant-oat01")
            ]
        return self.route.direct_path, body, headers, upstream


def scenarios(settings: Settings) -> list[Scenario]:
    out: list[Scenario] = []
    routes = [p.ROUTES[k] for k in settings.routes]
    for conns in settings.json_conns:
        out += [Scenario("json", r, conns) for r in routes]
    for conns in settings.large_conns:
        out.append(Scenario("json", p.ROUTES["messages"], conns, large=True))
    for conns in settings.stream_conns:
        out += [Scenario("stream", r, conns) for r in routes]
    out += [Scenario("slow", p.ROUTES[k], settings.slow_conns) for k in settings.slow_routes]
    return out


@dataclass
class Sample:
    """One repetition of one scenario at one target."""

    p50: float = 0.0  # ms: latency (json) or total stream time (streams)
    p99: float = 0.0
    rate: float = 0.0  # req/s or streams/s
    ttft: float = 0.0  # ms, streams only
    count: int = 0
    errors: int = 0
    bad: int = 0  # streams that failed the completeness/order check
    problem: str = ""
    tool: str = ""
    stretch: float = 0.0
    stretch_p99: float = 0.0
    stretch_max: float = 0.0
    cpu_us: float = 0.0  # CPU time of the server under test per answer (robust to a busy machine)


@dataclass
class Results:
    settings: Settings
    pinning: str
    notes: list[str] = field(default_factory=list)
    samples: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)  # key -> target -> reps
    process: dict[str, Any] = field(default_factory=dict)
    micro: dict[str, Any] = field(default_factory=dict)
    decisions: dict[str, Any] = field(default_factory=dict)
    probes: dict[str, str] = field(default_factory=dict)
    instructions: dict[str, float] = field(default_factory=dict)  # scenario -> per answer (callgrind)
    instructions_off: dict[str, float] = field(default_factory=dict)  # the same, observability off
    instructions_accounts: dict[str, float] = field(default_factory=dict)  # two accounts + a client key
    started_at: str = ""
    wall_seconds: float = 0.0

    def add(self, key: str, target: str, sample: Sample) -> None:
        self.samples.setdefault(key, {}).setdefault(target, []).append(sample)

    def merge(self, other: Results) -> None:
        """Take ``other``'s repetitions in too (a re-run of the same settings)."""
        for key, by_target in other.samples.items():
            for target, samples in by_target.items():
                self.samples.setdefault(key, {}).setdefault(target, []).extend(samples)
        self.probes.update({k: v for k, v in other.probes.items() if v != "ok"})

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "pinning": self.pinning,
            "notes": self.notes,
            "samples": {
                k: {t: [asdict(s) for s in v] for t, v in d.items()} for k, d in self.samples.items()
            },
            "process": self.process,
            "micro": self.micro,
            "decisions": self.decisions,
            "probes": self.probes,
            "instructions": self.instructions,
            "instructions_observe_off": self.instructions_off,
            "instructions_accounts_keys": self.instructions_accounts,
            "started_at": self.started_at,
            "wall_seconds": self.wall_seconds,
        }


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _stream_sample(
    scn: Scenario, settings: Settings, fmt: Format, result: client.LoadResult, exact: bytes | None
) -> Sample:
    ok = [a for a in result.answers if not a.error and a.status == 200]
    sample = Sample(count=len(result.answers), errors=len(result.answers) - len(ok) + result.connect_errors)
    want = scn.deltas(settings)
    for a in result.answers:
        if a.error or a.status != 200:
            sample.problem = sample.problem or (a.error or f"HTTP {a.status}: {a.body[:200]!r}")
    for a in ok:
        problem = p.check_stream(fmt, a.body, want, exact)
        if problem:
            sample.bad += 1
            sample.problem = sample.problem or problem
    totals = [a.total * 1000 for a in ok]
    sample.p50, sample.p99 = median(totals), percentile(totals, 99)
    sample.ttft = median([a.ttft * 1000 for a in ok])
    sample.rate = len(ok) / result.wall if result.wall else 0.0
    sample.tool = "asyncio client"
    if scn.kind == "slow":
        ideal = (settings.slow_events - 1) * settings.slow_interval * 1000
        sample.stretch = sample.p50 / ideal
        sample.stretch_p99 = sample.p99 / ideal
        sample.stretch_max = max(totals) / ideal if totals else 0.0
    return sample


class Bench:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.affinity = os.sched_getaffinity(0)  # restored by stop(): a second run must see every CPU
        self.pin = Pinning.plan()
        self.dir = scratch_dir()
        self.res = Results(settings, self.pin.note)
        self.ports: dict[str, int] = {}
        self.procs: dict[str, Proc] = {}
        self.keys: dict[str, str] = {}  # target → the client key its requests carry
        self.wrk: Wrk | None = None
        self.expected: dict[str, bytes] = {}
        self.peak_rss = 0.0
        self.last_load = 0.0

    def _pin_proxy(self) -> None:
        if self.pin.proxy:
            os.sched_setaffinity(0, self.pin.proxy)

    def note(self, text: str) -> None:
        self.res.notes.append(text)
        print(f"note: {text}", flush=True)

    # -- lifecycle

    async def start(self) -> None:
        _raise_fd_limit()
        if self.pin.load:
            os.sched_setaffinity(0, self.pin.load)
        up_argv, up_env = bench_module("upstream")
        up = Proc(
            "upstream",
            [
                *up_argv,
                "--slow-events",
                str(self.s.slow_events),
                "--slow-interval",
                str(self.s.slow_interval),
            ],
            up_env,
            self.pin.load,
        )
        self.procs["upstream"] = up
        up.start(stdout=subprocess.PIPE)
        assert up.popen is not None and up.popen.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(up.popen.stdout.readline), 20)
        if not line.startswith(b"READY "):
            raise RuntimeError(f"fake upstream did not start: {line!r} {up.stderr_tail()}")
        self.ports["direct"] = int(line.split()[1])
        nginx = nginx_binary() if self.s.use_nginx else None
        if self.s.use_nginx and nginx is None:
            self.note("nginx not installed (apt-get install nginx-light): the nginx reference is skipped")
        if nginx:
            port = free_port()
            proc = nginx_proc(nginx, self.dir, port, self.ports["direct"], self.pin.proxy)
            self.procs["nginx"] = proc  # registered first, so a failed start is still stopped
            proc.start()
            await wait_healthy(proc, port)
            self.ports["nginx"] = port
        wrk = which("wrk") if self.s.use_wrk else None
        if self.s.use_wrk and wrk is None:
            self.note(
                "wrk not installed (apt-get install wrk): request/response load uses the asyncio client"
            )
        if wrk:
            self.wrk = Wrk(wrk, self.dir, self.pin.load)
        await self.startup_times()
        port = free_port()
        proc = ccproxy_proc(port, self.ports["direct"], self.dir, self.pin.proxy)
        self.procs["ccproxy"] = proc
        proc.start()
        self.res.process.setdefault("startup_s", []).append(await wait_healthy(proc, port))
        self.ports["ccproxy"] = port
        self.res.process["rss_started_mb"] = rss_mb(proc.pid)

    async def stop(self) -> None:
        cc = self.procs.get("ccproxy")
        if cc is not None and cc.alive() and self.last_load:
            self.res.process["rss_end_mb"] = rss_mb(cc.pid)
            self.res.process["rss_end_after_s"] = time.perf_counter() - self.last_load
        for name in ("ccproxy", "nginx", "upstream"):
            if name in self.procs:
                self.procs[name].stop()
        os.sched_setaffinity(0, self.affinity)

    def targets(self) -> list[str]:
        return [t for t in TARGETS if t in self.ports]

    # -- process measurements

    async def startup_times(self) -> None:
        for _ in range(self.s.startup_reps):
            port = free_port()
            proc = ccproxy_proc(port, self.ports["direct"], self.dir, self.pin.proxy)
            proc.start()
            try:
                self.res.process.setdefault("startup_s", []).append(await wait_healthy(proc, port))
            finally:
                proc.stop()
        times = []
        for _ in range(self.s.help_reps):
            t = time.perf_counter()
            out = await asyncio.create_subprocess_exec(
                *ccproxy_command(),
                "--help",
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, **ccproxy_env(self.ports["direct"], self.dir)},
                preexec_fn=self._pin_proxy,
            )
            await out.wait()
            times.append(time.perf_counter() - t)
        self.res.process["help_s"] = times

    # -- scenario runs

    async def probe(self, scn: Scenario, target: str) -> None:
        """One request checked in full before the timed runs (wrk does not look at answers)."""
        port = self.ports[target]
        path, body, headers, fmt = scn.request(target, port)
        key = self.keys.get(target)
        if key is not None:  # a client key in place of the SDK's dummy API key
            headers = [(k, key if k.lower() == "x-api-key" else v) for k, v in headers]
        raw = p.raw_request(path, body, headers)
        conn, answer = await client.fetch(None, HOST, port, raw, 30)
        if conn.transport is not None:
            conn.transport.close()
        if answer.error or answer.status != 200:
            problem = answer.error or f"HTTP {answer.status}: {answer.body[:300]!r}"
        elif scn.kind == "json" and not (scn.route.upstream is Format.RESPONSES and target != "ccproxy"):
            problem = p.check_json(fmt, answer.body)
        elif scn.kind == "json":
            problem = p.check_stream(fmt, answer.body, p.CODEX_SHORT_DELTAS)
        else:
            problem = p.check_stream(fmt, answer.body, scn.deltas(self.s))
            if not problem and target == "direct":
                # the upstream's exact bytes: a passthrough answer equal to them needs no parsing
                self.expected[f"{scn.baseline}:{fmt.value}"] = answer.body
        self.res.probes[f"{scn.key}@{target}"] = problem or "ok"
        if problem:
            print(f"  PROBE FAILED {scn.key} at {target}: {problem}", flush=True)

    async def measure(self, scn: Scenario, target: str, seconds: float | None = None) -> Sample:
        """One timed run, plus the CPU time the server under test spent per request/stream."""
        proc = self.procs.get("upstream" if target == "direct" else target)
        cpu0 = cpu_seconds(proc.pid) if proc else 0.0
        sample = await self._measure(scn, target, seconds)
        if proc and sample.count:
            sample.cpu_us = (cpu_seconds(proc.pid) - cpu0) / sample.count * 1e6
        return sample

    async def _measure(self, scn: Scenario, target: str, seconds: float | None = None) -> Sample:
        port = self.ports[target]
        path, body, headers, fmt = scn.request(target, port)
        key = self.keys.get(target)
        if key is not None:  # a client key in place of the SDK's dummy API key
            headers = [(k, key if k.lower() == "x-api-key" else v) for k, v in headers]
        if scn.kind == "json":
            load: Load
            dur = seconds if seconds is not None else self.s.json_seconds
            if self.wrk is not None:
                load = await self.wrk.run(port, path, body, headers, scn.conns, max(1, round(dur)))
            else:
                load = await python_load(port, p.raw_request(path, body, headers), scn.conns, dur)
            return Sample(
                p50=load.p50,
                p99=load.p99,
                rate=load.rps,
                count=load.requests,
                errors=load.errors,
                tool=load.tool,
            )
        raw = p.raw_request(path, body, headers)
        exact = self.expected.get(f"{scn.baseline}:{fmt.value}")
        if scn.kind == "slow":
            sampler = asyncio.ensure_future(self.sample_rss()) if target == "ccproxy" else None
            result = await client.closed_loop(
                HOST, port, raw, conns=scn.conns, duration=0, per_conn=1, timeout=120
            )
            if sampler is not None:
                sampler.cancel()
        else:
            dur = seconds if seconds is not None else self.s.stream_seconds
            if scn.conns == 1:
                result = await client.closed_loop(HOST, port, raw, conns=1, duration=dur)
            else:
                result = await client.closed_loop(HOST, port, raw, conns=scn.conns, duration=dur)
        return _stream_sample(scn, self.s, fmt, result, exact)

    async def sample_rss(self) -> None:
        pid = self.procs["ccproxy"].pid
        while True:
            self.peak_rss = max(self.peak_rss, rss_mb(pid))
            await asyncio.sleep(0.05)

    async def run_scenarios(self) -> None:
        todo = scenarios(self.s)
        targets = self.targets()
        print(f"probing {len(todo)} scenarios at {', '.join(targets)}", flush=True)
        for scn in todo:
            if scn.kind == "slow":
                continue  # every slow stream is checked in full by the measurement itself
            for target in targets:
                if target != "ccproxy" and f"{scn.baseline}@{target}" in self.res.probes:
                    continue
                await self.probe(scn, target)
                if target != "ccproxy":
                    self.res.probes[f"{scn.baseline}@{target}"] = self.res.probes[f"{scn.key}@{target}"]
        # warm-up: every ccproxy route once under light load, then the idle footprint
        for scn in todo if self.s.warmup else ():
            if scn.kind != "slow" and scn.conns <= 32:
                await self.measure(scn, "ccproxy", seconds=0.2 if scn.kind == "stream" else 1)
        await asyncio.sleep(self.s.settle)
        self.res.process["rss_idle_mb"] = rss_mb(self.procs["ccproxy"].pid)
        for rep in range(self.s.reps):
            order = targets[rep % len(targets) :] + targets[: rep % len(targets)]
            print(f"repetition {rep + 1}/{self.s.reps} (order {', '.join(order)})", flush=True)
            done_baselines: set[tuple[str, str]] = set()
            for scn in todo:
                for target in order:
                    if target != "ccproxy":
                        if (scn.baseline, target) in done_baselines:
                            continue
                        done_baselines.add((scn.baseline, target))
                    key = scn.key if target == "ccproxy" else scn.baseline
                    sample = await self.measure(scn, target)
                    self.res.add(key, target, sample)
                    flag = (
                        f"  errors={sample.errors} bad={sample.bad} {sample.problem[:120]}"
                        if (sample.errors or sample.bad)
                        else ""
                    )
                    print(
                        f"  {key:<38} {target:<8} p50={sample.p50:8.3f} ms  p99={sample.p99:8.3f} ms  "
                        f"rate={sample.rate:9.1f}/s{flag}",
                        flush=True,
                    )
                    if scn.kind == "slow":
                        await asyncio.sleep(self.s.settle / 2)  # let 1,000 closed connections drain
        self.last_load = time.perf_counter()
        await asyncio.sleep(2 * self.s.settle)
        self.res.process["rss_after_mb"] = rss_mb(self.procs["ccproxy"].pid)
        self.res.process["rss_peak_mb"] = self.peak_rss
        try:
            with open(f"/proc/{self.procs['ccproxy'].pid}/status") as fh:
                hwm = next(line for line in fh if line.startswith("VmHWM:"))
            self.res.process["rss_hwm_mb"] = int(hwm.split()[1]) / 1024
        except (OSError, StopIteration):
            pass

    async def run_workers(self) -> None:
        """req/s of non-streaming messages at 32 connections: --workers 2 (unpinned) against one worker."""
        scn = Scenario("json", p.ROUTES["messages"], 32)
        port = free_port()
        proc = ccproxy_proc(port, self.ports["direct"], self.dir, set(cpus()), workers=2)
        proc.start()
        try:
            await wait_healthy(proc, port)
            await asyncio.sleep(1.0)  # both workers up
            self.ports["ccproxy-w2"], self.procs["ccproxy-w2"] = port, proc
            for _ in range(2):  # both workers warm
                await self.measure(scn, "ccproxy-w2", seconds=1)
            one: list[float] = []
            two: list[float] = []
            errors = 0
            for _ in range(self.s.reps):
                for target, rates in (("ccproxy", one), ("ccproxy-w2", two)):
                    sample = await self.measure(scn, target)
                    rates.append(sample.rate)
                    errors += sample.errors
            self.res.process["workers_errors"] = errors
            if errors:
                self.note(f"--workers comparison: {errors} failed requests; the ratio is not valid")
            self.res.process["workers_rps_1"] = one
            self.res.process["workers_rps_2"] = two
            print(f"  workers: 1 -> {median(one):.0f} req/s, 2 -> {median(two):.0f} req/s", flush=True)
        finally:
            proc.stop()
            self.ports.pop("ccproxy-w2", None)
            self.procs.pop("ccproxy-w2", None)

    async def run_observe(self) -> None:
        """Messages, non-streaming: ccproxy as shipped (metrics + ledger + pricing on) against the same
        server with the three off: req/s at 32 connections and p50 at 1 connection."""
        await self._versus("observe", "observability", OBSERVE_OFF, variant_is="off")

    async def run_accounts(self) -> None:
        """The same comparison for issue 15's hot path: two accounts per provider and a client key on every
        request (the variant) against ccproxy as shipped with one login."""
        env, key = instructions.accounts_home(self.dir)
        await self._versus("accounts", "two accounts + a client key", env, variant_is="on", key=key)

    async def run_aged(self) -> None:
        """The server that served the whole main table against a fresh one with the same settings: what a
        long day of traffic (bursts of 1,000 streams, 128 connections) leaves behind."""
        await self._versus("aged", "after the main table vs fresh", {}, variant_is="off", reference="ccproxy")

    async def _versus(
        self,
        name: str,
        title: str,
        env: Mapping[str, str | None],
        *,
        variant_is: str,
        key: str | None = None,
        reference: str | None = None,
    ) -> None:
        """``env`` (the variant) against ``reference``: by default a fresh server as shipped, so neither
        side carries the main table's history. Rounds alternate the order (ABBA) and each round's ratio is
        kept: a drift of the machine's speed over the minute cancels out within a round."""
        started: list[str] = []
        ref = reference or f"ccproxy-{name}-ref"
        target = f"ccproxy-{name}"
        try:
            sides: list[tuple[str, Mapping[str, str | None] | None]] = [(target, env)]
            if reference is None:
                sides.append((ref, None))
            for each, extra in sides:
                port = free_port()
                proc = ccproxy_proc(port, self.ports["direct"], self.dir, self.pin.proxy, extra_env=extra)
                started.append(each)
                self.ports[each], self.procs[each] = port, proc
                proc.start()
                await wait_healthy(proc, port)
            if key is not None:
                self.keys[target] = key
            labels = {target: variant_is, ref: "off" if variant_is == "on" else "on"}
            pr = self.res.process
            for conns, measure in ((1, "p50"), (32, "rate")):
                scn = Scenario("json", p.ROUTES["messages"], conns)
                for each in (target, ref):
                    await self.measure(scn, each, seconds=1)  # warm
                for round_ in range(2 * self.s.reps):
                    got: dict[str, float] = {}
                    for each in (ref, target) if round_ % 2 == 0 else (target, ref):
                        sample = await self.measure(scn, each)
                        got[labels[each]] = getattr(sample, measure)
                        pr.setdefault(f"{name}_{measure}_{labels[each]}", []).append(got[labels[each]])
                        pr[f"{name}_errors"] = pr.get(f"{name}_errors", 0) + sample.errors
                    if measure == "rate":
                        pr.setdefault(f"{name}_rate_pairs", []).append(got["on"] / got["off"])
            if pr.get(f"{name}_errors"):
                self.note(f"{title} comparison: {pr[f'{name}_errors']} failed requests; not valid")
            on, off = median(pr[f"{name}_rate_on"]), median(pr[f"{name}_rate_off"])
            paired = median(pr[f"{name}_rate_pairs"])
            print(f"  {title}: on {on:.0f} req/s, off {off:.0f} req/s, paired ratio {paired:.3f}", flush=True)
        finally:
            for each in started:
                self.procs.pop(each).stop()
                self.ports.pop(each, None)
            self.keys.pop(target, None)

    async def run_dashboard(self) -> None:
        """Messages, non-streaming, 32 connections: the dashboard closed against open with a viewer reading
        its live stream (every finished request is encoded and sent to it), interleaved."""
        scn = Scenario("json", p.ROUTES["messages"], 32)
        pr = self.res.process
        await self.measure(scn, "ccproxy", seconds=1)  # warm
        for _ in range(self.s.reps):
            for label in ("closed", "open"):
                viewer = await _live_viewer(self.ports["ccproxy"]) if label == "open" else None
                try:
                    sample = await self.measure(scn, "ccproxy")
                finally:
                    if viewer is not None:
                        viewer.cancel()
                pr.setdefault(f"dashboard_rate_{label}", []).append(sample.rate)
                pr["dashboard_errors"] = pr.get("dashboard_errors", 0) + sample.errors
        if pr.get("dashboard_errors"):
            self.note(f"dashboard comparison: {pr['dashboard_errors']} failed requests; not valid")
        shut, live = median(pr["dashboard_rate_closed"]), median(pr["dashboard_rate_open"])
        print(f"  dashboard: closed {shut:.0f} req/s, open {live:.0f} req/s", flush=True)

    async def run_decisions(self) -> None:
        # HTTP client libraries under 32 connections, on the proxy's CPU
        micro_argv, micro_env = bench_module("micro")
        argv = [
            *micro_argv,
            "clients",
            "--port",
            str(self.ports["direct"]),
            "--seconds",
            "2",
            "--conns",
            "32",
        ]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=self._pin_proxy,
            env={**os.environ, **micro_env},
        )
        out, err = await proc.communicate()
        try:
            self.res.decisions["http_clients"] = orjson.loads(out.strip().splitlines()[-1])
        except (orjson.JSONDecodeError, IndexError):
            self.note(f"HTTP client comparison failed: {err.decode(errors='replace')[-300:]}")
        # uvicorn event loop / HTTP parser variants serving the same app
        variants = []
        scn1 = Scenario("json", p.ROUTES["messages"], 1)
        scn32 = Scenario("json", p.ROUTES["messages"], 32)
        for loop_name, http in (
            ("uvloop", "httptools"),
            ("asyncio", "httptools"),
            ("uvloop", "h11"),
            ("asyncio", "h11"),
        ):
            port = free_port()
            variant_argv, variant_env = bench_module("variant")
            vproc = Proc(
                f"variant-{loop_name}-{http}",
                [
                    *variant_argv,
                    "--port",
                    str(port),
                    "--loop",
                    loop_name,
                    "--http",
                    http,
                ],
                {**ccproxy_env(self.ports["direct"], self.dir), **variant_env},
                self.pin.proxy,
                cwd=self.dir,
            )
            vproc.start()
            try:
                await wait_healthy(vproc, port)
                self.ports["variant"], self.procs["variant"] = port, vproc
                await self.measure(scn1, "variant", seconds=1)
                lat = await self.measure(scn1, "variant")
                thr = await self.measure(scn32, "variant")
                if lat.errors or thr.errors:
                    self.note(f"server variant {loop_name}/{http}: {lat.errors + thr.errors} failed requests")
                variants.append(
                    {
                        "errors": lat.errors + thr.errors,
                        "loop": loop_name,
                        "http": http,
                        "p50_1conn_ms": lat.p50,
                        "cpu_us_per_req": thr.cpu_us,
                        "rps_32": thr.rate,
                        "p99_32_ms": thr.p99,
                    }
                )
            except RuntimeError as exc:
                variants.append({"loop": loop_name, "http": http, "error": str(exc)[:300]})
            finally:
                vproc.stop()
                self.ports.pop("variant", None)
                self.procs.pop("variant", None)
        self.res.decisions["servers"] = variants

    async def run_instructions(self) -> None:
        if not instructions.available():
            self.note("valgrind not installed (apt-get install valgrind): no instruction counts")
            return
        todo = [
            (f"{kind}:{key}", key, kind == "stream") for kind in ("json", "stream") for key in self.s.routes
        ]
        print(f"counting instructions per answer under callgrind ({len(todo)} scenarios)", flush=True)
        self.res.instructions = await instructions.count(self.ports["direct"], self.dir, todo)
        if self.s.observe:
            self.res.instructions_off = await instructions.count(
                self.ports["direct"], self.dir, todo, OBSERVE_OFF
            )
        # Two accounts per provider and a client key on every request (issue 15), beside one static login.
        env, key = instructions.accounts_home(self.dir)
        self.res.instructions_accounts = await instructions.count(
            self.ports["direct"], self.dir, todo, env, client_key=key
        )

    def run_micro(self) -> None:
        quick = self.s.mode != "full"
        self.res.micro["translation"] = micro.translation_costs(quick)
        self.res.micro["json"] = micro.json_costs(quick)
        self.res.micro["sse_parse_us_per_event"] = micro.sse_parse_cost()


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs), from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


async def _live_viewer(port: int) -> asyncio.Task[None]:
    """A dashboard viewer: ``/dashboard/live`` opened and read (and dropped) until the task is cancelled."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET /dashboard/live HTTP/1.1\r\nhost: {HOST}:{port}\r\n\r\n".encode())
    if b" 200 " not in await reader.readline():
        raise RuntimeError("the dashboard's live stream did not open")

    async def read() -> None:
        try:
            while await reader.read(65536):
                pass
        finally:
            writer.close()

    return asyncio.create_task(read())


async def run(settings: Settings) -> Results:
    bench = Bench(settings)
    started = time.perf_counter()
    busy0, own0, load0 = _busy_seconds(), _own_seconds(), os.getloadavg()[0]
    bench.res.started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"ccproxy bench ({settings.mode}): {bench.pin.note}", flush=True)
    try:
        await bench.start()
        if settings.mode != "instructions":
            await bench.run_scenarios()
            if settings.observe:
                await bench.run_aged()
        if settings.workers:
            await bench.run_workers()
        if settings.observe and settings.mode != "instructions":
            await bench.run_observe()
            await bench.run_accounts()
        if settings.dashboard and settings.mode != "instructions":
            await bench.run_dashboard()
        if settings.decisions:
            await bench.run_decisions()
        if settings.instructions:
            await bench.run_instructions()
    finally:
        await bench.stop()
    bench.res.wall_seconds = time.perf_counter() - started
    # CPU used by processes that are not part of the benchmark (other work on a shared machine)
    foreign = max(0.0, (_busy_seconds() - busy0) - (_own_seconds() - own0))
    share = foreign / (bench.res.wall_seconds * len(cpus()))
    bench.res.process["foreign_cpu_share"] = share
    bench.res.process["loadavg_1m"] = [load0, os.getloadavg()[0]]
    if share > 0.05:
        bench.note(
            f"other processes used {share:.0%} of the machine's CPU during the run (load average "
            f"{load0:.2f} at the start): numbers are noisier and slower than on an idle machine"
        )
    if settings.micro:
        bench.run_micro()
    return bench.res
