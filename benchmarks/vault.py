"""`make bench-vault`: the read path's speed, on this machine's real servers, beside its peer.

In one run, on a 1 GiB clip uploaded and sealed: (1) streaming the whole clip through a
consultation's media URL (authenticated, decrypted) against a direct S3 GET of the sealed
object, three times each, alternating, medians compared; (2) 200 random 1 MiB range reads
through the media URL against direct S3 ranged GETs of 1 MiB, median latencies; (3) an
extraction package (signed BagIt zip), MB/s.
Targets: streaming >= 0.5x the direct GET; range median <= 2x the direct one.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import httpx
import psutil
import urllib3
from rich.console import Console

from benchmarks.common import bench_stack
from benchmarks.ingest import CAMERAS, MIB, PeakRss, make_file, setup_organisation, upload_post
from temoin.dev_issuer import DevIssuer
from temoin.stack import BUCKET

RANGE_READS = 200
ROUNDS = 3  # whole-clip reads on each side


def _drain(response: httpx.Response) -> int:
    return sum(len(piece) for piece in response.iter_bytes(MIB))


def main(size_mib: int) -> None:
    console = Console()
    with bench_stack(console, "temoin-bench-vault-") as stack:
        vault_url = stack.url("vault")
        issuer = DevIssuer(stack.root / "var" / "dev-issuer")
        station = setup_organisation(vault_url, issuer)
        org = station.organisation_id
        token = issuer.mint("bench-responsable", ["responsable"], organisation_id=org)
        clip = stack.root / "clip.bin"
        sha = make_file(clip, size_mib * MIB)
        upload_post(stack.url("ingest"), station, CAMERAS[0], clip, sha)
        clip.unlink()
        store = stack.store
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=vault_url, timeout=120, headers=headers) as client:
            (recording,) = client.get(f"/v1/organisations/{org}/recordings").json()["items"]
            key = f"recordings/{org}/{recording['id']}.sealed"
            sealed_size = store.client.stat_object(BUCKET, key).size
            assert sealed_size is not None
            url = client.post(
                f"/v1/organisations/{org}/recordings/{recording['id']}/consultations",
                json={"motif": "benchmark"},
            ).json()["url"]
            mb = size_mib * MIB / 1e6

            # (1) the whole clip, ROUNDS times each, alternating, so that both sides meet the
            # same moments of a busy machine; the medians are compared.
            # The same HTTP client library as the peer's (urllib3, under minio), here and for
            # the ranges, so that the client's own cost is the same on both sides.
            pool = urllib3.PoolManager()
            processes = {
                "vault": psutil.Process(stack.services["vault"].process.pid),
                "s3": next(
                    p for p in psutil.Process().children(recursive=True) if p.name() == "weed"
                ),
                "client": psutil.Process(),
            }
            direct_rates, served_rates = [], []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                response = store.client.get_object(BUCKET, key)
                direct_bytes = sum(len(p) for p in response.stream(MIB))
                response.close()
                response.release_conn()
                direct_rates.append(sealed_size / 1e6 / (time.perf_counter() - started))
                assert direct_bytes == sealed_size
                usage = PeakRss(processes)  # the last round's is printed
                with usage:
                    started = time.perf_counter()
                    streamed = pool.request("GET", f"{vault_url}{url}", preload_content=False)
                    assert streamed.status == 200
                    served = sum(len(p) for p in streamed.stream(MIB))
                    streamed.release_conn()
                    served_rates.append(mb / (time.perf_counter() - started))
                assert served == size_mib * MIB

            # (2) random 1 MiB ranges
            rng = random.Random(42)
            direct_ms, served_ms = [], []
            for _ in range(RANGE_READS):
                start = rng.randrange(0, size_mib * MIB - MIB)
                t0 = time.perf_counter()
                part = store.client.get_object(BUCKET, key, offset=start, length=MIB)
                part.read()
                part.close()
                part.release_conn()
                direct_ms.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                wanted = {"Range": f"bytes={start}-{start + MIB - 1}"}
                answer = pool.request("GET", f"{vault_url}{url}", headers=wanted)
                assert answer.status == 206 and len(answer.data) == MIB
                served_ms.append((time.perf_counter() - t0) * 1000)

            # (3) an extraction package
            procedure = client.post(
                f"/v1/organisations/{org}/procedures",
                json={"type": "judiciaire", "reference": "BENCH-1"},
            ).json()["id"]
            client.post(
                f"/v1/organisations/{org}/procedures/{procedure}/recordings",
                json={"recording_id": recording["id"], "qualification": "benchmark"},
            ).raise_for_status()
            started = time.perf_counter()
            with client.stream(
                "POST",
                f"/v1/organisations/{org}/procedures/{procedure}/extractions",
                json={"recording_id": recording["id"], "motif": "benchmark",
                      "destinataires": ["bench"]},
            ) as package:  # fmt: skip
                assert package.status_code == 200
                package_bytes = _drain(package)
            package_s = time.perf_counter() - started

        direct_rate, served_rate = statistics.median(direct_rates), statistics.median(served_rates)
        direct_median = statistics.median(direct_ms)
        served_median = statistics.median(served_ms)
        console.print(f"\n{size_mib} MiB clip")
        console.print(
            f"  (1) direct S3 GET of the sealed object: {direct_rate:7.1f} MB/s (median of "
            f"{ROUNDS}: {', '.join(f'{r:.0f}' for r in direct_rates)})"
        )
        console.print(
            f"      streaming through the media URL:    {served_rate:7.1f} MB/s (median of "
            f"{ROUNDS}: {', '.join(f'{r:.0f}' for r in served_rates)})"
        )
        console.print(f"      ratio {served_rate / direct_rate:.2f}   target: >= 0.5")
        console.print(f"      during the last stream: {usage.report()}")
        p90 = statistics.quantiles(served_ms, n=10)[-1]
        console.print(
            f"  (2) {RANGE_READS} random 1 MiB ranges, median: direct {direct_median:.1f} ms, "
            f"media URL {served_median:.1f} ms (p90 {p90:.1f} ms)"
        )
        console.print(f"      ratio {served_median / direct_median:.2f}   target: <= 2")
        console.print(
            f"  (3) extraction package: {package_bytes / 1e6 / package_s:7.1f} MB/s "
            f"({package_bytes / MIB:.0f} MiB in {package_s:.1f} s)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    arguments = parser.parse_args()
    main(arguments.size_mib)
