"""Costs from real usage in every summary: `dspyc eval`, `optimize`, `bench` and the proxy's
`/metrics` price the calls they made with the price table (`--prices FILE` over the
defaults). Each expected figure is computed here, independently: the simulator records every
request it received, the test sends those same requests to the simulator again (its answers
are a pure function of the request) and sums the usage it reports, then prices it."""
import json
import os
import subprocess

import httpx
import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import DSPYC, ROOT, start_serve, start_sim

pytestmark = [pytest.mark.e2e]

PRICES = {"cheap-model": {"input_per_1k": 0.25, "output_per_1k": 1.5},
          "dspyc-sim": {"input_per_1k": 0.5, "output_per_1k": 2.0}}


def dspyc(*args, timeout=120):
    return subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def write_prices(tmp_path):
    p = tmp_path / "prices.json"
    p.write_text(json.dumps(PRICES))
    return p


def chat_bodies(rec):
    return [r["body"] for r in map(json.loads, rec.read_text().splitlines())
            if r["path"] == "/v1/chat/completions"]


def replayed_usage(base, bodies):
    """Prompt and completion tokens the simulator reports for these requests."""
    pin = pout = 0
    with httpx.Client(timeout=30) as c:
        for b in bodies:
            u = c.post(base + "/chat/completions", json=b).json()["usage"]
            pin += u["prompt_tokens"]
            pout += u["completion_tokens"]
    return pin, pout


def price(model, pin, pout):
    p = PRICES[model]
    return pin / 1000 * p["input_per_1k"] + pout / 1000 * p["output_per_1k"]


def gen_dev(tmp_path, n=12, seed=3):
    dev = tmp_path / "dev.jsonl"
    r = dspyc("sim", "gen-task", "arith", "--n", n, "--seed", seed)
    assert r.returncode == 0, r.stderr
    dev.write_text(r.stdout)
    return dev


def test_eval_prices_the_calls_it_made_and_cache_hits_cost_nothing(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    dev, prices, cache = gen_dev(tmp_path), write_prices(tmp_path), tmp_path / "cache"
    args = ["eval", "--signature", "question -> answer", "--devset", dev, "--metric",
            "exact_match:answer", "--base-url", base, "--model", "cheap-model", "--prices",
            prices, "--cache", "disk", "--cache-dir", cache]
    r = dspyc(*args, "--json", tmp_path / "e1.json")
    assert r.returncode in (0, 1), r.stderr
    bodies = chat_bodies(rec)
    assert len(bodies) == 12
    pin, pout = replayed_usage(base, bodies)
    want = price("cheap-model", pin, pout)
    cost = json.loads((tmp_path / "e1.json").read_text())["cost"]
    assert (cost["prompt_tokens"], cost["completion_tokens"]) == (pin, pout)
    assert cost["calls"] == 12 and cost["cache_hits"] == 0 and cost["priced"]
    assert cost["usd"] == pytest.approx(want, rel=1e-9) and cost["saved_usd"] == 0
    row = cost["by_model"]["cheap-model"]
    assert row["input_per_1k"] == 0.25 and row["output_per_1k"] == 1.5
    assert f"estimated cost: ${want:.6f} (cheap-model at $0.25 / $1.5 per 1k" in r.stderr
    # the same devset again: every call is a disk-cache hit, costs nothing, saves the lot
    r = dspyc(*args, "--json", tmp_path / "e2.json")
    cost = json.loads((tmp_path / "e2.json").read_text())["cost"]
    assert cost["cache_hits"] == 12 and cost["usd"] == 0
    assert cost["saved_usd"] == pytest.approx(want, rel=1e-9)
    assert f"cache hits saved ${want:.6f}" in r.stderr
    # a model without a price is said to be unpriced, never counted as free
    r = dspyc(*args[:-4], "--cache", "off", "--model", "my-own-model", "--json",
              tmp_path / "e3.json")
    cost = json.loads((tmp_path / "e3.json").read_text())["cost"]
    assert cost["unpriced"] == ["my-own-model"] and not cost["priced"]
    assert "estimated cost: unknown (no price for model my-own-model" in r.stderr
    # a bad price file is refused before any call, naming the file and the model
    (tmp_path / "bad.json").write_text(json.dumps({"x": {"input_per_1k": -1, "output_per_1k": 1}}))
    n = len(rec.read_text().splitlines())
    r = dspyc(*args[:-4], "--prices", tmp_path / "bad.json")
    assert r.returncode == 2 and 'bad.json: model "x": prices must be numbers >= 0' in r.stderr
    assert len(rec.read_text().splitlines()) == n


def test_optimize_report_prices_every_call_by_model(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    train, dev, prices = gen_dev(tmp_path, 20, 4), gen_dev(tmp_path, 10, 5), write_prices(tmp_path)
    (tmp_path / "train.jsonl").write_text(train.read_text())
    r = dspyc("optimize", "--signature", "question -> answer", "--optimizer", "bootstrap",
              "--trainset", tmp_path / "train.jsonl", "--valset", dev, "--metric",
              "exact_match:answer", "--save", tmp_path / "s.json", "--report",
              tmp_path / "rep.json", "--base-url", base, "--model", "cheap-model", "--prices",
              prices, "--cache", "off")
    assert r.returncode == 0, r.stderr
    lm = json.loads((tmp_path / "rep.json").read_text())["lm"]
    bodies = chat_bodies(rec)
    assert len(bodies) == lm["calls"] == lm["cost"]["calls"]
    pin, pout = replayed_usage(base, bodies)
    want = price("cheap-model", pin, pout)
    assert (lm["cost"]["prompt_tokens"], lm["cost"]["completion_tokens"]) == (pin, pout)
    assert lm["cost"]["usd"] == pytest.approx(want, rel=1e-9)
    assert lm["cost_usd"] == pytest.approx(want, rel=1e-9)  # what --max-cost checks
    assert f"estimated cost: ${want:.6f} (cheap-model at $0.25 / $1.5" in r.stderr
    # each trial carries the run's cost so far: rising, and within the final figure
    so_far = [t["cost_usd_total"] for t in json.loads((tmp_path / "rep.json").read_text())
              ["trials"]]
    assert so_far and so_far == sorted(so_far) and 0 < so_far[-1] <= want + 1e-9
    # --max-cost now stops on the table's price, with no --price-in/--price-out
    r = dspyc("optimize", "--signature", "question -> answer", "--optimizer", "random-search",
              "--num-trials", 6, "--trainset", tmp_path / "train.jsonl", "--valset", dev,
              "--metric", "exact_match:answer", "--save", tmp_path / "s2.json", "--report",
              tmp_path / "rep2.json", "--base-url", base, "--model", "cheap-model", "--prices",
              prices, "--cache", "off", "--max-cost", f"{want * 1.5:.6f}")
    rep = json.loads((tmp_path / "rep2.json").read_text())
    assert rep["stopped"].startswith("max-cost"), rep.get("stopped")
    assert rep["lm"]["cost"]["usd"] >= want * 1.5


def test_bench_json_prices_each_subject(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    out = tmp_path / "bench.json"
    r = dspyc("bench", "--base-url", base, "--model", "dspyc-sim", "--prices",
              write_prices(tmp_path), "--modules", "predict", "--iterations", 8, "--warmup", 2,
              "--concurrency", 2, "--json", out, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    doc = json.loads(out.read_text())
    with open(os.path.join(ROOT, "docs", "bench.schema.json")) as f:
        jsonschema.validate(doc, json.load(f))
    cost = doc["subjects"][0]["cost"]
    bodies = chat_bodies(rec)
    assert len(bodies) == cost["calls"] == 2 + 8 + 8  # warm-up and both series
    pin, pout = replayed_usage(base, bodies)
    want = price("dspyc-sim", pin, pout)
    assert cost["usd"] == pytest.approx(want, rel=1e-9)
    assert cost["usd_per_call"] == pytest.approx(want / 18, rel=1e-9)
    assert f"${want:.6f} for 18 calls" in r.stdout


def metric(base, name, **labels):
    text = httpx.get(base[: -len("/v1")] + "/metrics").text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_proxy_metrics_price_upstream_calls_by_model_and_count_what_hits_saved(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, sim = start_sim("--record", rec)
    _, srv = start_serve("--upstream", sim, "--cache", "mem", "--prices", write_prices(tmp_path))
    bodies = [{"model": m, "messages": [{"role": "user", "content": f"rivers {i}"}]}
              for m in ("cheap-model", "dspyc-sim") for i in range(3)]
    with httpx.Client(timeout=30) as c:
        for b in bodies + bodies[:2]:  # the last two are cache hits
            assert c.post(srv + "/chat/completions", json=b).status_code == 200
    sent = chat_bodies(rec)
    assert len(sent) == 6
    for model in ("cheap-model", "dspyc-sim"):
        mine = [b for b in sent if b["model"] == model]
        pin, pout = replayed_usage(sim, mine)
        assert metric(srv, "dspyc_cost_usd_total", model=model) == pytest.approx(
            price(model, pin, pout), rel=1e-6)
        assert metric(srv, "dspyc_tokens_total", model=model, direction="in") >= pin
    hin, hout = replayed_usage(sim, bodies[:2])
    assert metric(srv, "dspyc_cost_saved_usd_total", model="cheap-model") == pytest.approx(
        price("cheap-model", hin, hout), rel=1e-6)
    assert metric(srv, "dspyc_cost_saved_usd_total", model="dspyc-sim") == 0
    # a bad price file stops the proxy before it listens
    (tmp_path / "bad.json").write_text("[]")
    r = dspyc("serve", "--upstream", sim, "--port", 0, "--prices", tmp_path / "bad.json",
              timeout=20)
    assert r.returncode == 2 and "a price file is a JSON object of models" in r.stderr
