"""The README's client examples, run as written (each ```python block of its "Python client" section, in a
child interpreter) against a real nats-server and a real worker."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def client_examples() -> list[str]:
    text = README.read_text()
    section = text.split("\n## Python client\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


async def run_example(code: str, nats_url: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_ML_")}
    env["SPARK_ML_NATS_URL"] = nats_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def test_the_section_has_the_two_examples() -> None:
    examples = client_examples()
    assert len(examples) == 2 and all("asyncio.run(main())" in code for code in examples)


async def test_the_stream_and_predict_example(nats_url, worker_factory) -> None:
    # Given a worker serving the stream and ml.predict
    await worker_factory(serve_predict=True)
    # When the README's first example runs as written
    out = await run_example(client_examples()[0], nats_url)
    # Then it printed the stream's prediction of the last snapshot and a predict reply from the same state
    stream, predict = out.splitlines()
    assert re.fullmatch(r"stream: BTCUSD (buy|sell|hold) 0\.\d+|stream: BTCUSD (buy|sell|hold) [01]\.0", stream)
    assert re.fullmatch(r"predict: baseline (buy|sell|hold) \d+\.\d", predict)
    assert float(predict.rsplit(" ", 1)[1]) > 50  # 31 rising prices: the RSI came from the stream's history


async def test_the_errors_example(nats_url, worker_factory) -> None:
    await worker_factory(serve_predict=True)
    out = await run_example(client_examples()[1], nats_url)
    assert out.splitlines() == [
        "refused: 400 unknown_model",
        "refused: schema mid: must be finite and > 0",
    ]
