"""`toolprm demo` / `make demo`: real queries with tools on the default model."""
from __future__ import annotations

import argparse
import json
import time

from tqdm import tqdm

from .api import format_trace, generate
from .models import get_policy

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit"}},
            "required": ["city"]}}},
    {"name": "calculate_triangle_area", "description": "Calculate the area of a triangle given its base and height.",
     "parameters": {"type": "dict", "properties": {
         "base": {"type": "integer", "description": "The base of the triangle."},
         "height": {"type": "integer", "description": "The height of the triangle."},
         "unit": {"type": "string", "description": "The unit of measure (defaults to 'units')"}},
         "required": ["base", "height"]}},
    {"name": "convert_currency", "description": "Convert an amount of money from one currency to another.",
     "parameters": {"type": "dict", "properties": {
         "amount": {"type": "float", "description": "Amount to convert"},
         "from_currency": {"type": "string", "description": "Three-letter code of the source currency"},
         "to_currency": {"type": "string", "description": "Three-letter code of the target currency"}},
         "required": ["amount", "from_currency", "to_currency"]}},
]

QUERIES = [
    "What's the weather like in Paris right now, in celsius?",
    "Find the area of a triangle with a base of 10 units and height of 5 units.",
    "How many euros do I get for 250 US dollars?",
    "Tell me a joke about cats.",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toolprm demo", description=__doc__)
    p.add_argument("--strategy", default="fine_beam")
    p.add_argument("-m", type=int, default=8)
    p.add_argument("-n", type=int, default=2)
    p.add_argument("--model", default=None)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    policy = get_policy(a.model)
    print(f"model: {policy.name} (loaded in {time.perf_counter() - t0:.1f}s); strategy: {a.strategy} "
          f"M={a.m} N={a.n}; tools: {', '.join(t.get('name') or t['function']['name'] for t in TOOLS)}\n")
    bar = tqdm(QUERIES, desc="demo", unit="query")
    for q in bar:
        r = generate(q, TOOLS, model=policy, strategy=a.strategy, m=a.m, n=a.n)
        bar.write(f"query: {q}\ncalls: {json.dumps(r.calls, ensure_ascii=False)}\nsteps:\n"
                  f"{format_trace(r.steps)}\nstats: {r.stats['generated_tokens']} sampled + "
                  f"{r.stats['forced_tokens']} forced tokens, {r.stats['forward_passes']} forward passes, "
                  f"{r.stats['scorer_calls']} scorer calls, {r.stats['seconds']:.1f}s\n")
    return 0
