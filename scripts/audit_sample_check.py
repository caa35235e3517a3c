"""The audit's stratified sample against the exhaustive run: per subgroup and attack, the sample's robust error
with its 95% interval beside the exhaustive run's, and how many exhaustive values fall inside the sample's
intervals. Both reports must come from the same model, data and seed (``weakspot audit`` with and without
``--all-images``); the times are the reports' stage seconds.

    .venv/bin/python scripts/audit_sample_check.py /tmp/audits45/sampled/report.json /tmp/audits45/all/report.json
"""

from __future__ import annotations

import argparse

from weakspot.report import load_report

ROUNDING = 1e-9  # a Wilson bound at a share of 0 or 1 lands a rounding error inside it


def group_name(group: dict[str, str]) -> str:
    return "/".join(group.values())


def total_queries(report: dict) -> int:
    """Model queries of all attacks: each attack's mean over the images it reached, times those images."""
    reached = report["audit"]["sample"].get("reached", {})
    return round(sum(attack["mean_queries"] * reached.get(attack["name"], report["n"]) for attack in report["attacks"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sampled", help="report.json of the default (sampled) audit")
    parser.add_argument("exhaustive", help="report.json of the same audit with --all-images")
    args = parser.parse_args()
    sampled, exhaustive = load_report(args.sampled), load_report(args.exhaustive)
    exhaustive_groups = {group_name(group["group"]): group for group in exhaustive["groups"]}
    attacks = [attack["name"] for attack in sampled["attacks"]]
    print("robust error per subgroup, % (a Markdown table): sample [95% interval] exhaustive (the images the sample's "
          "figure rests on); * marks an exhaustive value outside the sample's interval")
    print("| group | images | " + " | ".join(attacks) + " |")
    print("|---|---|" + "---|" * len(attacks))
    inside = total = 0
    for group in sampled["groups"]:
        name = group_name(group["group"])
        whole = exhaustive_groups[name]
        cells = []
        for attack in attacks:
            low, high = group["robust_error_interval"][attack]
            value = whole["robust_error"][attack]
            hit = low - ROUNDING <= value <= high + ROUNDING
            inside, total = inside + hit, total + 1
            reached = group.get("robust_n", {}).get(attack, group["n"])
            cells.append(f"{100 * group['robust_error'][attack]:.0f} [{100 * low:.0f}-{100 * high:.0f}] "
                         f"{100 * value:.0f}{'' if hit else '*'} ({reached})")
        print(f"| {name} | {group['n']} / {whole['n']} | " + " | ".join(cells) + " |")
    seconds = [sum(report["audit"]["stage_seconds"].values()) for report in (sampled, exhaustive)]
    queries = [total_queries(report) for report in (sampled, exhaustive)]
    print(f"exhaustive values inside the sample's intervals: {inside} of {total}; "
          f"images sampled {sampled['n']} / {exhaustive['n']}; attack queries {queries[0]} / {queries[1]} "
          f"({queries[0] / queries[1]:.2f}x); stage time {seconds[0]:.0f} s / {seconds[1]:.0f} s "
          f"({seconds[0] / seconds[1]:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
