"""Claims, shared budgets and account limits: what keeps many runs on one account from paying twice.

Conditional writes are checked on a local folder and on moto's S3 server with many writers at once;
claims with holders that died or went quiet; and whole runs against the fake service (real HTTP),
counting billed jobs there: a create whose answer was lost is found in Luma's or Replicate's list (not bought again)
or, where the service has no list, never sent blind; two runs on one account stay within the
account's Prefect global concurrency limit; two runs sharing a budget never pass it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from prefect_modify_video.claims import (
    LocalConditionalFiles,
    S3ConditionalFiles,
    SharedBudget,
    acquire_claim,
)
from prefect_modify_video.errors import BudgetExceededError
from prefect_modify_video.flows import BackendSpec, ModifyVideoParameters, SegmentsFailedError, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.storage.scratch import current_owner
from prefect_modify_video.testing import FakeModifyServer, Fault

FAKE_KEY = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def server():
    with FakeModifyServer(polls_to_complete=3, rate_limit_reset_seconds=0.1) as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh_server(server, monkeypatch):
    server.reset()
    for env in ("LUMAAI_API_KEY", "SEGMIND_API_KEY", "REPLICATE_API_TOKEN"):
        monkeypatch.setenv(env, FAKE_KEY)
    yield
    server.wait_idle(30)


@pytest.fixture(scope="module")
def two_segments(tmp_path_factory):
    """4 s, 320x180, 30 fps, two shots and a tone: two segments under a 2.5 s cap."""
    folder = tmp_path_factory.mktemp("two")
    return make_sample_video(folder / "two.mp4", seconds=4, width=320, height=180, fps=30, scenes=2)


@pytest.fixture(params=["local", "s3"])
def conditional_files(request, tmp_path):
    if request.param == "local":
        return LocalConditionalFiles(tmp_path / "claims")
    s3fs = pytest.importorskip("s3fs")
    endpoint, s3 = request.getfixturevalue("s3_server")
    bucket = f"claims-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    filesystem = s3fs.S3FileSystem(
        key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"},
        skip_instance_cache=True,
    )
    return S3ConditionalFiles(filesystem, f"{bucket}/store/claims")


def test_exactly_one_writer_creates_each_file_and_no_swap_is_lost(conditional_files):
    names = [f"{i}.json" for i in range(12)]

    def create_all(writer: int) -> list[str]:
        return [name for name in names if conditional_files.create(name, json.dumps({"w": writer}).encode())]

    with ThreadPoolExecutor(6) as pool:
        won = [name for names_won in pool.map(create_all, range(6)) for name in names_won]
    assert sorted(won) == sorted(names), "each name created exactly once"

    conditional_files.create("counter.json", b"0")

    def add(times: int) -> None:
        for _ in range(times):
            while True:
                data, token = conditional_files.read("counter.json")
                if conditional_files.replace("counter.json", str(int(data) + 1).encode(), token):
                    break

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(add, [5] * 4))
    data, token = conditional_files.read("counter.json")
    assert int(data) == 20, "every compare-and-swap counted once"
    assert not conditional_files.delete("counter.json", "stale-token")
    assert conditional_files.delete("counter.json", token)
    assert conditional_files.read("counter.json") is None


def claim_of(owner: dict, state: str = "claimed", **extra) -> bytes:
    return json.dumps({"holder": uuid.uuid4().hex, "owner": owner, "state": state, "beat": 0, **extra}).encode()


def test_a_claim_whose_holder_died_on_this_host_is_taken_over_at_once(tmp_path):
    files = LocalConditionalFiles(tmp_path)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = {**current_owner().__dict__, "pid": int(finished.stdout), "started": "1"}
    files.create("k.json", claim_of(dead, "submitted", job_id="job-1"))
    claim = asyncio.run(acquire_claim(files, "k", is_done=lambda: False, holder={}, lease_seconds=60))
    assert claim is not None and claim.taken_over == "submitted" and claim.previous["job_id"] == "job-1"
    claim.release()
    assert files.read("k.json") is None


def test_a_result_stored_just_before_the_claim_is_not_paid_again(tmp_path):
    # The holder stores its result and releases its claim between our look at the store and our claim.
    files = LocalConditionalFiles(tmp_path)
    looks = iter([False, True])
    claim = asyncio.run(acquire_claim(files, "k", is_done=lambda: next(looks), holder={}, lease_seconds=1))
    assert claim is None, "the segment is done: nothing to pay"
    assert files.read("k.json") is None, "and no claim is left behind"


def test_a_quiet_claim_is_taken_over_by_exactly_one_successor(tmp_path):
    files = LocalConditionalFiles(tmp_path)
    elsewhere = {"host": "another-machine", "pid": 1}
    files.create("k.json", claim_of(elsewhere))
    done = threading.Event()
    winners = []

    def successor() -> None:
        claim = asyncio.run(
            acquire_claim(files, "k", is_done=done.is_set, holder={}, lease_seconds=1.0, check_seconds=0.05)
        )
        if claim is not None:
            winners.append(claim)

    threads = [threading.Thread(target=successor) for _ in range(4)]
    for thread in threads:
        thread.start()
    while not winners:
        threading.Event().wait(0.05)
    # The others keep watching a claim that is now alive (its heartbeat), past two leases. (A lease of
    # 1 s, not less: on a loaded machine a starved heartbeat thread would let another take it over.)
    threading.Event().wait(2.5)
    assert len(winners) == 1 and winners[0].taken_over == "claimed"
    assert json.loads(files.read("k.json")[0])["beat"] >= 1, "the winner's heartbeat rewrites the claim"
    done.set()
    winners[0].release()
    for thread in threads:
        thread.join(10)
    assert len(winners) == 1


def test_a_shared_budget_is_never_passed_by_writers_at_once(tmp_path):
    budget = SharedBudget(LocalConditionalFiles(tmp_path), "team", cap_usd=1.0)
    refused = []

    def spend(call: str) -> None:
        try:
            budget.reserve(call, 0.3)
        except BudgetExceededError:
            refused.append(call)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(spend, [f"c{i}" for i in range(6)]))
    assert len(refused) == 3 and budget.spent_usd() == pytest.approx(0.9)


def run(source, tmp_path, server, backend="luma", **overrides):
    spec = dict(name=backend, base_url=server.base_url, poll_interval_seconds=0.05)
    if backend in ("luma", "replicate"):
        spec["upload_url"] = server.base_url  # clips by URL: what a list of jobs can be searched for
    spec.update(overrides.pop("spec", {}))
    values = dict(
        source=str(source),
        prompt="watercolour painting",
        mode="flex_1",
        output=str(tmp_path / f"out-{uuid.uuid4().hex[:6]}.mp4"),
        backend=BackendSpec(**spec),
        max_segment_seconds=2.5,
        store_dir=str(tmp_path / "store"),
        retry_delay_seconds=0.05,
    )
    values.update(overrides)
    return modify_video(**flow_arguments(ModifyVideoParameters(**values)))


@pytest.mark.parametrize("service", ["luma", pytest.param("replicate", marks=pytest.mark.slow)])
def test_a_create_whose_answer_was_lost_is_found_in_the_services_list_not_bought_again(
    service, two_segments, tmp_path, server
):
    server.script(service, [Fault.dropped_connection(after_accept=True)])
    with pytest.raises(SegmentsFailedError, match="SubmitOutcomeUnknownError"):
        run(two_segments, tmp_path, server, service, concurrency=1)
    server.wait_idle(30)
    assert server.stats(service).billed == 2, "the service accepted (and billed) the create whose answer was lost"
    claims = list((tmp_path / "store" / "claims").glob("*.json"))
    assert len(claims) == 1 and json.loads(claims[0].read_text())["state"] == "unknown"

    result = run(two_segments, tmp_path, server, service)
    assert server.stats(service).calls == 2, "the lost create was found in the list of jobs, not sent again"
    assert server.stats(service).billed == 2
    assert result.billed_calls == 1 and result.reused_segments == 1
    assert probe_video(result.output).frames == probe_video(two_segments).frames
    assert not list((tmp_path / "store" / "claims").glob("*.json"))


@pytest.mark.slow
def test_a_lost_create_at_a_service_without_a_list_is_never_paid_blind(two_segments, tmp_path, server):
    server.script("segmind", [Fault.dropped_connection(after_accept=True)])
    with pytest.raises(SegmentsFailedError, match="SubmitOutcomeUnknownError"):
        run(two_segments, tmp_path, server, "segmind", concurrency=1)
    calls = server.stats("segmind").calls
    with pytest.raises(SegmentsFailedError, match="dashboard.*--resend-unknown"):
        run(two_segments, tmp_path, server, "segmind")
    assert server.stats("segmind").calls == calls, "a re-run sends nothing blind"
    result = run(two_segments, tmp_path, server, "segmind", resend_unknown=True)
    assert server.stats("segmind").calls == calls + 1  # --resend-unknown: the user's decision to send it again
    assert probe_video(result.output).frames == probe_video(two_segments).frames


@pytest.mark.slow
def test_runs_at_once_keep_the_account_limit_and_share_one_budget(two_segments, tmp_path, server):
    from prefect.client.orchestration import get_client

    account = f"team-{uuid.uuid4().hex[:6]}"
    budget = f"batch-{uuid.uuid4().hex[:6]}"
    spec = {"account": account, "account_concurrency": 1}
    first = run(two_segments, tmp_path, server, prompt="watercolour painting", budget=budget, spec=spec)
    per_call = first.cost_usd / first.billed_calls
    cap = 4.5 * per_call  # room for two more calls of the four the next two runs want
    results, errors = [], []

    def one_run(prompt: str) -> None:
        try:
            results.append(run(two_segments, tmp_path, server, prompt=prompt, budget=budget, max_cost_usd=cap,
                               spec=spec))
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=one_run, args=(prompt,)) for prompt in ("charcoal sketch", "neon noir")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    stats = server.stats("luma")
    assert stats.peak_in_flight == 1, "one generation at a time across the runs (the account's limit)"
    assert stats.calls == stats.billed == 4, "the two refused segments were never sent"
    assert len(errors) + len(results) == 2 and any("BudgetExceededError" in str(e) for e in errors)
    spent = json.loads((tmp_path / "store" / "budgets" / f"{budget}.json").read_text())
    assert len(spent["calls"]) == 4 and sum(spent["calls"].values()) <= cap + 1e-9

    async def read_limit():
        async with get_client() as client:
            return await client.read_global_concurrency_limit_by_name(f"modify-video:luma:{account}:generations")

    limit = asyncio.run(read_limit())
    assert limit.limit == 1 and limit.active_slots == 0, "every slot was given back"


def test_a_slot_given_back_goes_at_once_to_a_segment_of_the_same_process_waiting_for_it():
    """Two segments (two threads, each its own event loop, as segment tasks run) want an account's one
    slot. The second asks, is refused and told to ask again in 1.5 s or more (a fresh limit's
    Retry-After); the first gives the slot back 0.3 s later: the second holds it well before its next ask."""
    from prefect_modify_video.tasks.account import AccountLimits

    limits = AccountLimits(f"modify-video:luma:{uuid.uuid4().hex[:6]}:generations", 1, None)
    moments = {}

    async def second():
        async with limits.generation():
            moments["taken"] = time.monotonic()

    async def first():
        async with limits.generation():
            waiting = threading.Thread(target=asyncio.run, args=(second(),))
            waiting.start()
            await asyncio.sleep(0.3)  # the second's first ask is refused meanwhile
            moments["given back"] = time.monotonic()
        return waiting

    asyncio.run(first()).join(10)
    assert moments["taken"] - moments["given back"] < 1.0, "the freed slot stood idle until the next ask"


def test_a_slot_handed_to_a_segment_stopped_before_holding_it_goes_back_to_the_server():
    """A finished generation hands its slot to the segment of its process waiting for it; that segment is
    stopped (cancelled) before it holds it: the slot is given back to the server, not leaked for a lease."""
    from prefect.client.orchestration import get_client

    from prefect_modify_video.tasks.account import AccountLimits

    limits = AccountLimits(f"modify-video:luma:{uuid.uuid4().hex[:6]}:generations", 1, None)
    held = []

    async def second():
        async with limits.generation():
            held.append("second")

    async def main():
        async with limits.generation():
            waiting = asyncio.ensure_future(second())
            await asyncio.sleep(0.5)  # refused meanwhile: it sleeps until a slot is freed
        waiting.cancel()  # the slot was just handed to it; it has not run since
        with pytest.raises(asyncio.CancelledError):
            await waiting
        async with get_client() as client:
            return await client.read_global_concurrency_limit_by_name(limits.generations)

    limit = asyncio.run(main())
    assert held == [], "the stopped segment never held the slot"
    assert limit.active_slots == 0, "the slot handed to it went back to the server"


SLOT_HOLDER = """
import asyncio, sys, time
from prefect.events.worker import EventsWorker
from prefect_modify_video.tasks.account import AccountLimits

async def hold(limits, rounds):
    read_line = lambda: asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for _ in range(rounds):
        await read_line()  # asked for again only when told: else it could win back the slot it gave
        async with limits.generation():
            print("held", flush=True)
            await read_line()
        print("given back", time.time(), flush=True)

asyncio.run(hold(AccountLimits(sys.argv[1], 1, None), int(sys.argv[2])))
EventsWorker.drain_all()
"""


@pytest.mark.slow
def test_a_slot_given_back_by_another_process_goes_at_once_to_a_segment_waiting_here(tmp_path):
    """Another process (another machine, as far as the account knows) holds the account's one slot for
    2 s and gives it back while a segment here waits, refused and told to ask again in about 2 s (the
    limit's average occupancy): the segment hears of it through Prefect's release event and holds the
    slot soon after, five times over. Asking only when the ``Retry-After`` says, the wait would be about
    1 s on average."""
    import os

    from prefect.settings import PREFECT_API_URL

    from prefect_modify_video.tasks.account import AccountLimits

    rounds = 5
    name = f"modify-video:luma:{uuid.uuid4().hex[:6]}:generations"
    limits = AccountLimits(name, 1, None)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(tmp_path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", SLOT_HOLDER, name, str(rounds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    waits = []

    async def wait_here() -> None:
        async def segment():
            async with limits.generation():
                moments["taken"] = time.time()
                await asyncio.sleep(2.0)  # held as long as the other's: the server's Retry-After stays near 2 s

        moments = {}
        task = asyncio.ensure_future(segment())
        await asyncio.sleep(2.0)  # refused meanwhile, and following the events
        assert "taken" not in moments
        holder.stdin.write("go\n")
        holder.stdin.flush()
        given_back = float(holder.stdout.readline().split()[-1])
        await asyncio.wait_for(task, 10)
        waits.append(moments["taken"] - given_back)

    try:
        for _ in range(rounds):
            holder.stdin.write("take\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "held"
            asyncio.run(wait_here())
        assert holder.wait(30) == 0
    finally:
        holder.kill()
    assert sum(waits) / rounds < 0.5, f"the freed slot stood idle until the next ask: {waits}"


def test_without_a_prefect_server_no_generation_slot_is_given(monkeypatch):
    """Acquired strictly: a server that does not answer gives no slot, so nothing can be sent."""
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from prefect_modify_video.tasks import account
    from prefect_modify_video.tasks.account import AccountLimits

    monkeypatch.setattr(account, "SERVER_WAIT_SECONDS", 0.0)
    limits = AccountLimits(f"modify-video:luma:{uuid.uuid4().hex[:6]}:generations", 2, None)
    sent = []

    async def generation():
        async with limits.generation():
            sent.append("create")

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api", PREFECT_CLIENT_MAX_RETRIES: 0}):
        with pytest.raises(Exception) as caught:
            asyncio.run(generation())
    assert not sent
    assert isinstance(caught.value, (ConcurrencySlotAcquisitionError, OSError)) or "connect" in str(caught.value).lower()


def test_a_generation_slot_is_held_until_the_job_ends_not_through_its_download(two_segments, tmp_path, server):
    """The run's one slot (concurrency 1) is held while a job can run at the service: the next
    segment's create goes while the last answer still downloads (4 s late here), yet never two
    generations at once, and each segment is paid once."""
    server.script("luma", [Fault.latency(4)], on="download")
    result = run(two_segments, tmp_path, server, concurrency=1)
    stats = server.stats("luma")
    assert stats.peak_in_flight == 1, "one generation at a time (the run's limit)"
    assert stats.calls == stats.billed == result.billed_calls == 2, "each segment paid once"
    first, second = server.create_spans("luma")
    assert second[0] - first[1] < 4, "the second create waited for the first answer's download"


@pytest.mark.slow
def test_a_batch_budget_is_one_budget_for_all_its_videos(two_segments, tmp_path, server):
    """``max_cost_usd`` of a batch is one budget in the store: its videos together stay under it."""
    from prefect_modify_video.flows.batch import BatchFailedError, BatchParameters, modify_video_batch

    first = run(two_segments, tmp_path / "probe", server, "segmind")  # the price of one segment, measured
    per_call = first.cost_usd / first.billed_calls
    server.reset()
    other = make_sample_video(tmp_path / "other.mp4", seconds=4, width=320, height=180, fps=30, scenes=3)
    cap = 3.5 * per_call  # three of the five segments of the two videos
    params = BatchParameters(
        sources=[str(two_segments), str(other)], output_folder=str(tmp_path / "out"), max_concurrent_videos=2,
        settings={"prompt": "pencil sketch", "max_cost_usd": cap, "max_segment_seconds": 2.5,
                  "store_dir": str(tmp_path / "store"), "retry_delay_seconds": 0.05,
                  "backend": {"name": "segmind", "base_url": server.base_url}},
    )
    with pytest.raises(BatchFailedError, match="failed") as failed:
        modify_video_batch(params)
    assert server.stats("segmind").calls == server.stats("segmind").billed == 3, "the refused segment was not sent"
    assert "3 paid calls in all" in str(failed.value), "what the failed videos paid is reported"
    budgets = list((tmp_path / "store" / "budgets").glob("batch-*.json"))
    assert len(budgets) == 1
    spent = json.loads(budgets[0].read_text())
    assert len(spent["calls"]) == 3 and sum(spent["calls"].values()) <= cap + 1e-9


@pytest.mark.slow
def test_a_damaged_job_record_is_settled_through_lumas_list(two_segments, tmp_path, server):
    """A billed job whose answer could not be fetched keeps its claim (``submitted``, with what identifies
    the request); when its job record is then damaged, the re-run finds the job in Luma's list of
    generations and downloads its answer: never bought again, not booked again."""
    server.script("luma", [Fault.NOT_FOUND], on="download")
    with pytest.raises(SegmentsFailedError, match="ResultUnavailableError"):
        run(two_segments, tmp_path, server, concurrency=1)
    jobs = list((tmp_path / "store" / "jobs").glob("*.json"))
    claims = list((tmp_path / "store" / "claims").glob("*.json"))
    assert len(jobs) == 1 and len(claims) == 1
    assert json.loads(claims[0].read_text())["state"] == "submitted"
    jobs[0].write_text('{"provider": "luma", "job_')  # damaged: cut short

    result = run(two_segments, tmp_path, server)
    assert server.stats("luma").calls == server.stats("luma").billed == 2, "nothing bought again"
    assert result.billed_calls == 0 and result.reused_segments == 2, "the job was booked by the run that saw it end"
    assert probe_video(result.output).frames == probe_video(two_segments).frames
    assert list((tmp_path / "store" / "jobs").glob("*.damaged-*")), "the damaged record is kept, set aside"
    assert not list((tmp_path / "store" / "claims").glob("*.json"))
